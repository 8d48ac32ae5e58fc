"""Benchmark: the full drift report on ~100k interactions per side, target under a minute on 2 cores.

The bundled generator writes a larger world (period 1 = the reference, about 100k logged
interactions; period 2 = the current batch, about 130k: it shows more candidates). The timed
call is `llmrec.monitoring.drift_between`, what `llmrec drift` and `llmrec monitor` run:

  * interaction features of every impression on both sides (Evidently DataDriftPreset, 10 columns
    + the unseen user/item shares) and drift.html;
  * item-text embedding drift: the bundled all-MiniLM-L6-v2 (zero-shot encoder) on
    drift.embedding_sample items per side, Evidently's MMD test, drift_embeddings.html (TSNE plot);
  * prediction drift: a two-tower champion (all-MiniLM-L6-v2 item tower, untrained user tower:
    speed does not depend on the weights) scores one candidate of drift.prediction_sample
    impressions per side, Evidently ValueDrift, drift_predictions.html.

Every run starts cold (the champion and the encoder are loaded and encode again, as in a pipeline
run). The total is the median of --repeats runs after one warm-up (imports, file cache); a
separate run times the phases. The machine is shared, so medians, with the load average noted.
Writes bench/results/drift_speed.{json,md}.

    .venv/bin/python bench/drift_speed.py [--threads 1] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from llmrec import monitoring
from llmrec.config import SyntheticSize, load_params
from llmrec.data.ingest import load_source
from llmrec.data.split import time_slice
from llmrec.data.synthetic import generate
from llmrec.drift import drift_report, impression_features, unseen_shares
from llmrec.models.backbone import resolve_backbone
from llmrec.models.text import TextConfig
from llmrec.models.two_tower import DEFAULT_MAX_HISTORY, TwoTower

OUT = Path(__file__).parent / "results"
WORLD = SyntheticSize(n_items=6000, n_users=5000, days_per_period=6, impressions_per_day=600)
TARGET_SECONDS = 60.0


def phases(params, reference, current, log, champion: Path, out: Path) -> dict[str, float]:
    """The steps of drift_between, timed one by one."""
    times = {}
    start = time.perf_counter()
    ref = impression_features(reference, log, params.drift.lookback_hours)
    cur = impression_features(current, log, params.drift.lookback_hours)
    unseen = unseen_shares(reference, current, params.drift.unseen_margin)
    times["features (both sides) + unseen shares"] = time.perf_counter() - start
    items = log.items
    start = time.perf_counter()
    embedding = monitoring._embedding_signal(params, reference, current, items, out)
    times["embedding drift (encode + MMD + HTML)"] = time.perf_counter() - start
    start = time.perf_counter()
    prediction = monitoring._prediction_signal(params, reference, current, log, items, champion, out)
    times["prediction drift (load champion + score + Evidently + HTML)"] = time.perf_counter() - start
    start = time.perf_counter()
    drift_report(ref, cur, out, params.drift.share_threshold, extra=unseen, embedding=embedding,
                 prediction=prediction, decide_on=params.drift.decide_on, ignore=params.drift.ignore)
    times["feature report (Evidently + drift.html + verdict)"] = time.perf_counter() - start
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: on the shared 2-core machine more threads ran slower)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    params = load_params(Path(__file__).parents[1] / "params.yaml", ["model.backbone=default"])
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        generate(tmp / "world", WORLD, params.synthetic.seed)
        log = load_source(tmp / "world").dataset
        start = log.impressions["timestamp"].min().floor("D")
        cut = start + pd.Timedelta(days=WORLD.days_per_period)
        reference, current = time_slice(log, end=cut), time_slice(log, start=cut)
        champion = TwoTower.from_backbone(resolve_backbone("default"), TextConfig(max_history=DEFAULT_MAX_HISTORY),
                                          params.model.max_length, "default", "cpu").save(tmp / "champion")

        def run(i: int) -> dict:
            return monitoring.drift_between(params, reference, current, log, tmp / f"out{i}", champion)

        verdict = run(0)  # warm-up: imports, file cache
        totals = []
        for i in range(1, args.repeats + 1):
            t0 = time.perf_counter()
            verdict = run(i)
            totals.append(time.perf_counter() - t0)
        steps = phases(params, reference, current, log, champion, tmp / "phases")
        html = {p.name: p.stat().st_size for p in (tmp / f"out{args.repeats}").glob("*.html")}
    load_after = os.getloadavg()
    total = statistics.median(totals)
    result = {
        "machine": {"cpu_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "torch": torch.__version__, "load_average_before": load_before, "load_average_after": load_after},
        "world": WORLD.model_dump(),
        "reference": {"impressions": len(reference.impressions), "interactions": len(reference.interactions)},
        "current": {"impressions": len(current.impressions), "interactions": len(current.interactions)},
        "drift_params": params.drift.model_dump(),
        "seconds_median": total,
        "seconds_runs": totals,
        "target_seconds": TARGET_SECONDS,
        "meets_target": total < TARGET_SECONDS,
        "phases_one_run": steps,
        "html_bytes": html,
        "verdict": {"drift_detected": verdict["drift_detected"], "share_drifted": verdict["share_drifted"],
                    "drifted_features": verdict["drifted_features"], "signals": verdict["signals"],
                    "embedding_score": verdict["embedding"]["score"], "prediction_score": verdict["prediction"]["score"]},
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "drift_speed.json").write_text(json.dumps(result, indent=2, default=str))
    d = params.drift
    md = [
        f"Full drift report (`monitoring.drift_between`): reference {len(reference.interactions):,} interactions "
        f"({len(reference.impressions):,} impressions), current {len(current.interactions):,} "
        f"({len(current.impressions):,} impressions).",
        "",
        f"**{total:.1f} s** median of {args.repeats} cold runs ({', '.join(f'{t:.1f}' for t in totals)} s); "
        f"target < {TARGET_SECONDS:.0f} s: {'met' if total < TARGET_SECONDS else 'NOT met'}.",
        "",
        "| phase (one more run) | seconds |",
        "|---|---:|",
        *(f"| {name} | {sec:.1f} |" for name, sec in steps.items()),
        "",
        f"Embeddings: {d.embedding_sample} items per side (all-MiniLM-L6-v2, zero-shot encoder), method {d.embedding_method}. "
        f"Predictions: a two-tower champion (all-MiniLM-L6-v2 item tower) on one candidate of {d.prediction_sample} impressions per side. "
        f"HTML: " + ", ".join(f"{k} {v / 2**20:.1f} MiB" for k, v in sorted(html.items())) + " (kept local, not logged).",
        f"Verdict on this world: drift {verdict['drift_detected']}, share {verdict['share_drifted']:.2f}, "
        f"signals {verdict['signals']}.",
        f"Machine: {torch.get_num_threads()} torch thread(s) of {os.cpu_count()} cores shared with other work, load average "
        f"{load_before[0]:.1f} before / {load_after[0]:.1f} after, {platform.platform()}, torch {torch.__version__}. "
        "Timings on a shared machine are noisy: the figure is a median.",
    ]
    (OUT / "drift_speed.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
