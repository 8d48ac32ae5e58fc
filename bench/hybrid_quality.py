"""Benchmark: ranking quality of the hybrid recommender vs the text-only two-tower, EASE, ItemKNN and SASRec.

Bundled generator (`small` preset, default `synthetic.collaborative`), period 1, temporal split (last
day held out). Trains the text-only two-tower (fine-tuned MiniLM, params.yaml defaults) and the hybrid
(params.yaml defaults, or `--budget`), then scores one evaluation with both models and every baseline
under the three protocols (impressions: logged candidates; sampled: each click vs 99 sampled
negatives; catalogue: every known item), split into warm items (seen in training) and cold ones, with
paired-bootstrap intervals of hybrid - EASE / ItemKNN / SASRec / two-tower per segment. Writes
bench/results/hybrid_quality.{json,md}. With --rerank-top N it also trains the cross-encoder (params.yaml
defaults) and scores it re-ranking the hybrid's top N in every protocol, against the hybrid alone
(bench/results/hybrid_rerank.{json,md}).

    .venv/bin/python bench/hybrid_quality.py [--budget cpu-10min] [--set train.max_steps=600 ...] [--impressions 0]
                                             [--collaborative 0.8] [--rerank-top 20]

--impressions 0 (default) scores every labelled impression of the held-out day (about 800; ~500 warm and
~300 cold in the catalogue protocol): with 250, the intervals of a segment are too wide to decide.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from llmrec.config import load_params

OUT = Path(__file__).parent / "results"


def main() -> None:
    from llmrec.data.context import with_context
    from llmrec.data.ingest import load_source
    from llmrec.data.split import temporal_split
    from llmrec.data.synthetic import generate
    from llmrec.evaluation.baselines import fit_baselines
    from llmrec.evaluation.evaluate import evaluate, sample_impressions
    from llmrec.models.ranker import load_ranker, ranker_scorer
    from llmrec.training.cross_encoder import train_cross_encoder
    from llmrec.training.hybrid import train_hybrid
    from llmrec.training.two_tower import train_two_tower

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", default=None, help="a params.yaml budget for the hybrid (e.g. cpu-10min)")
    parser.add_argument("--impressions", type=int, default=0, help="holdout impressions scored (0 = all), in every protocol")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="params.yaml overrides for the hybrid (repeatable), e.g. train.max_steps=600")
    parser.add_argument("--collaborative", type=float, default=None, help="generator knob (default params.yaml)")
    parser.add_argument("--rerank-top", type=int, default=0, help="also score the cross-encoder re-ranking the hybrid's top N (0 = off)")
    args = parser.parse_args()
    root = Path(__file__).parents[1]
    params = load_params(root / "params.yaml")
    hybrid_params = load_params(root / "params.yaml", ([f"budget={args.budget}"] if args.budget else []) + args.overrides)
    collaborative = params.synthetic.collaborative if args.collaborative is None else args.collaborative
    timings = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        generate(tmp / "syn", params.synthetic.size(), params.synthetic.seed, (1,), collaborative=collaborative)
        dataset = load_source(tmp / "syn" / "period1").dataset
        split = temporal_split(dataset, params.data.holdout_days)
        recent = split.train.impressions.sort_values("timestamp", kind="stable").tail(params.train.max_train_impressions)
        fit = with_context(split.train.restrict(recent["impression_id"]), split.train, params.train.negatives_per_positive, params.train.seed)

        start = time.perf_counter()
        train_two_tower(fit, params.model, params.train, tmp / "two_tower", progress=False, pooling=params.model.two_tower.pooling)
        timings["two_tower_train_s"] = time.perf_counter() - start
        start = time.perf_counter()
        hybrid_train = hybrid_params.train.model_copy(update={"checkpoint_every": 0})
        train_hybrid(with_context(split.train, split.train, 0, params.train.seed), hybrid_params.model, hybrid_train, tmp / "hybrid", progress=False)
        timings["hybrid_train_s"] = time.perf_counter() - start

        if args.rerank_top:
            start = time.perf_counter()
            train_cross_encoder(fit, params.model, params.train.model_copy(update={"checkpoint_every": 0}), tmp / "cross_encoder", progress=False)
            timings["cross_encoder_train_s"] = time.perf_counter() - start
        holdout = with_context(sample_impressions(split.holdout, args.impressions, params.eval.seed), dataset, params.eval.negatives, params.eval.seed)
        train = with_context(split.train, split.train, 0, params.eval.seed)
        scorers = {
            "model": ranker_scorer(load_ranker(tmp / "hybrid", "cpu"), split.train.items),
            "two_tower": ranker_scorer(load_ranker(tmp / "two_tower", "cpu"), split.train.items),
        }
        rerank = f"cross_encoder [hybrid top-{args.rerank_top}]"
        if args.rerank_top:
            scorers[rerank] = reranked(scorers["model"], ranker_scorer(load_ranker(tmp / "cross_encoder", "cpu"), split.train.items),
                                       args.rerank_top, timings)
        start = time.perf_counter()
        scorers.update(fit_baselines(train, dataset.items, params.eval.baselines, backbone=params.model.backbone,
                                     seed=params.eval.seed, sasrec=params.eval.sasrec))
        timings["baselines_fit_s"] = time.perf_counter() - start
        start = time.perf_counter()
        report = evaluate(holdout, split.train, dataset, scorers, ks=params.eval.ks, primary="ndcg@10", seed=params.eval.seed,
                          catalogue_scorers=list(scorers), catalogue_impressions=args.impressions or 10**9,
                          confidence=params.eval.confidence, sampled_negatives=params.eval.negatives)
        timings["evaluate_s"] = time.perf_counter() - start

    if args.rerank_top:
        write_rerank(report, rerank, args, params, timings)
        return
    table = report.warm_cold
    result = {
        "machine": {"cpu_threads": torch.get_num_threads(), "platform": platform.platform(), "torch": torch.__version__},
        "date": time.strftime("%Y-%m-%d"), "collaborative": collaborative, "budget": args.budget, "overrides": args.overrides,
        "impressions": args.impressions or "all",
        "hybrid": hybrid_params.model.hybrid.model_dump(), "hybrid_train": {k: hybrid_train.model_dump()[k] for k in ("max_steps", "batch_size", "lr")},
        "two_tower_train": {k: params.train.model_dump()[k] for k in ("max_steps", "batch_size", "lr")},
        "protocols": {name: p.metrics for name, p in report.protocols.items()},
        "warm_cold": table.to_dict(orient="records"), "comparisons": report.warm_cold_comparisons, "timings": timings,
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "hybrid_quality.json").write_text(json.dumps(result, indent=2, default=float))
    md = [f"nDCG@10 on the bundled data (small preset, collaborative={collaborative}, period 1, last day held out, "
          f"{args.impressions or 'all'} impressions); 'model' is the hybrid{' (budget ' + args.budget + ')' if args.budget else ''}"
          f"{' with ' + ', '.join(args.overrides) if args.overrides else ''}.", ""]
    for protocol, part in table.groupby("protocol", sort=False):
        pivot = part.pivot_table(index="ranker", columns="segment", values="value", sort=False)
        counts = part.drop_duplicates("segment").set_index("segment")["n"]
        overall = report.protocols[protocol].metrics
        md += [f"**{protocol}**", "", "| ranker | all | " + " | ".join(f"{c} (n={int(counts[c])})" for c in pivot.columns) + " |",
               "|---|---:|" + "---:|" * len(pivot.columns)]
        md += [f"| {r} | {overall[r]['ndcg@10']:.3f} | " + " | ".join(f"{v:.3f}" for v in pivot.loc[r]) + " |" for r in pivot.index]
        md += [""] + [f"- {c['segment']}: hybrid − {c['versus']} = {c['difference']:+.3f} [{c['low']:+.3f}, {c['high']:+.3f}]"
                      for c in report.warm_cold_comparisons if c["protocol"] == protocol and c["versus"] in ("ease", "itemknn", "sasrec", "two_tower")]
        md += [""]
    md += [f"Training: two-tower {timings['two_tower_train_s']:.0f} s ({params.train.max_steps} steps), hybrid "
           f"{timings['hybrid_train_s']:.0f} s ({hybrid_train.max_steps} steps); baselines {timings['baselines_fit_s']:.0f} s. "
           f"Machine: {result['machine']}, {result['date']} (2 shared cores: times are noisy)."]
    (OUT / "hybrid_quality.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


def reranked(retriever, ranker, top: int, timings: dict):
    """A scorer: `ranker` re-ranks each list's `top` rows by `retriever` (the rest keep its order below them); the
    ranker's time goes to timings["rerank_s"]."""
    import numpy as np

    from llmrec.evaluation.protocols import rerank_scores

    def timed(frame):
        start = time.perf_counter()
        out = ranker(frame)
        timings["rerank_s"] = timings.get("rerank_s", 0.0) + time.perf_counter() - start
        timings["reranked_rows"] = timings.get("reranked_rows", 0) + len(frame)
        return out

    return lambda frame: rerank_scores(np.asarray(retriever(frame), dtype=float), frame, top, timed)


def write_rerank(report, name: str, args, params, timings: dict) -> None:
    """hybrid_rerank.{json,md}: per protocol and warm/cold segment, the re-ranked hybrid vs the hybrid alone."""
    from llmrec.evaluation.stats import paired_bootstrap

    rows = []
    for protocol, result in report.protocols.items():
        mine, base = result.per_impression[name], result.per_impression["model"]
        table = report.warm_cold[report.warm_cold["protocol"] == protocol].set_index(["ranker", "segment"])["value"]
        segments = sorted(report.warm_cold.loc[report.warm_cold["protocol"] == protocol, "segment"].unique())
        for segment in ["all", *segments]:
            if segment == "all":
                a, b = mine, base
                values = (result.metrics[name]["ndcg@10"], result.metrics["model"]["ndcg@10"])
            else:
                labels = report.warm_cold_labels[protocol]
                ids = set(labels.index[labels == segment])
                a, b = mine[mine["impression_id"].isin(ids)], base[base["impression_id"].isin(ids)]
                values = (table[(name, segment)], table[("model", segment)])
            comp = paired_bootstrap(a, b, "ndcg@10", confidence=params.eval.confidence, seed=params.eval.seed)
            rows.append({"protocol": protocol, "segment": segment, "reranked": float(values[0]), "hybrid": float(values[1]), **comp})
    result = {"date": time.strftime("%Y-%m-%d"), "budget": args.budget, "overrides": args.overrides, "top": args.rerank_top,
              "machine": {"cpu_threads": torch.get_num_threads(), "platform": platform.platform()}, "rows": rows, "timings": timings}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "hybrid_rerank.json").write_text(json.dumps(result, indent=2, default=float))
    md = [f"nDCG@10 on the bundled data (as hybrid_quality.md): the cross-encoder (params.yaml defaults, "
          f"{params.train.max_steps} steps) re-ranking the hybrid's top {args.rerank_top}{' (budget ' + args.budget + ')' if args.budget else ''}, "
          "against the hybrid alone; difference = re-ranked − hybrid, paired bootstrap.", "",
          "| protocol | segment | hybrid | re-ranked | difference |", "|---|---|---:|---:|---|"]
    md += [f"| {r['protocol']} | {r['segment']} | {r['hybrid']:.3f} | {r['reranked']:.3f} | {r['difference']:+.3f} [{r['low']:+.3f}, {r['high']:+.3f}] |"
           for r in rows]
    md += ["", f"Cross-encoder training {timings.get('cross_encoder_train_s', 0):.0f} s; re-ranking {timings.get('rerank_s', 0):.0f} s for "
           f"{timings.get('reranked_rows', 0)} pairs. Machine: {result['machine']}, {result['date']}."]
    (OUT / "hybrid_rerank.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
