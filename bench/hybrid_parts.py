"""Benchmark: the hybrid against each of its own parts, at a few per cent, a quarter and all of a budget.

The hybrid is trained with `--budget` (default cpu-10min) on the bundled generator's MovieLens-format log (its
default sequence signal) for --fractions of the budget's planned steps, then scored under the standard protocol
(`llmrec.evaluation.benchmark`: leave-last-out, 99 negatives never consumed, full ranking) as it scores (its
blend, chosen on the validation items) and with each part alone (text, zero-shot, ids, EASE: every other part's
weight and the age offset's at 0). The blend is chosen on the validation items none of the parts trained on,
so the hybrid should never rank below one of its parts, at any training length. Writes
bench/results/hybrid_parts.{json,md} with commit, date, machine and load.

    .venv/bin/python bench/hybrid_parts.py [--budget cpu-10min] [--fractions 0.03 0.25 1] [--users 943] [--items 1682]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

OUT = Path(__file__).parent / "results"


def main() -> None:
    import torch

    from llmrec.config import SyntheticSize, load_params
    from llmrec.data.ingest import load_source
    from llmrec.data.synthetic import generate
    from llmrec.evaluation.benchmark import (
        FULL,
        SAMPLED,
        VARIANTS,
        StandardProtocol,
        _sequence_model,
        per_user_metrics,
        standard_split,
    )
    from llmrec.models.hybrid import PARTS
    from llmrec.training.hybrid import fit_hybrid

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", default="cpu-10min")
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.03, 0.25, 1.0])
    parser.add_argument("--users", type=int, default=943)
    parser.add_argument("--items", type=int, default=1682)
    parser.add_argument("--per-day", type=int, default=4800, help="generator impressions per day (12 days)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    args = parser.parse_args()
    root = Path(__file__).parents[1]
    params = load_params(root / "params.yaml", [f"budget={args.budget}", *args.overrides])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        size = SyntheticSize(n_items=args.items, n_users=args.users, days_per_period=6, impressions_per_day=args.per_day)
        generate(Path(tmp) / "ml", size, params.synthetic.seed, collaborative=params.synthetic.collaborative,
                 sequential=params.synthetic.sequential, format="movielens")
        split = standard_split(load_source(Path(tmp) / "ml").dataset, StandardProtocol())
        per_epoch = -(-len(split.train_val.interactions) // (params.train.batch_size * params.model.hybrid.sequence_length))
        planned = min(params.train.max_steps, int(params.train.max_epochs * per_epoch) if params.train.max_epochs else params.train.max_steps)
        for fraction in args.fractions:
            steps = max(2, round(planned * fraction))
            train = params.train.model_copy(update={"max_steps": steps, "max_epochs": 0, "eval_every_epochs": 0,
                                                    "eval_every": max(1, min(steps // 2, per_epoch)), "early_stopping_patience": 0})
            started, load = time.perf_counter(), os.getloadavg()
            with tempfile.TemporaryDirectory() as out:
                model, result = fit_hybrid(split.train_val, params.model.hybrid, train, out, backbone=params.model.backbone,
                                           max_length=params.model.max_length, progress=False, validation_users=None)
            seconds = time.perf_counter() - started
            blend, offsets = model.net.blend.clone(), model.net.offset_scale.clone()
            scored = {}
            for name in ["hybrid", *model.net.part_columns()]:
                with torch.no_grad():
                    if name == "hybrid":
                        model.net.blend.copy_(blend)
                        model.net.offset_scale.copy_(offsets)
                    else:
                        model.net.blend.zero_()
                        model.net.blend[:, PARTS.index(name)] = 1.0
                        model.net.offset_scale.zero_()
                metrics = per_user_metrics(split, _sequence_model(split, VARIANTS[0], model), (10,))
                scored[name] = {p: float(metrics[p]["ndcg@10"].mean()) for p in (SAMPLED, FULL)}
            rows.append({"fraction": fraction, "steps": steps, "planned": planned, "seconds": round(seconds, 1),
                         "load_before": [round(x, 2) for x in load], "training": result.length(), "ndcg@10": scored})
            print(rows[-1], flush=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=root).stdout.strip()
    record = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "commit": commit, "budget": args.budget, "overrides": args.overrides,
              "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
              "data": {"users": args.users, "items": args.items, "per_day": args.per_day}, "rows": rows}
    OUT.mkdir(exist_ok=True)
    (OUT / "hybrid_parts.json").write_text(json.dumps(record, indent=2))
    parts = [p for p in rows[0]["ndcg@10"] if p != "hybrid"]
    lines = ["# The hybrid against its own parts", "",
             f"{record['date']}, commit {commit}, {os.cpu_count()} CPUs, {platform.platform()}. `--budget {args.budget}` cut to a "
             f"share of its {planned} planned steps; standard protocol, train-only histories, nDCG@10 sampled / full, on the "
             f"generator's MovieLens-format log ({args.users} users, {args.items} items).", "",
             "| share of the budget | steps | load (1 min) | hybrid | " + " | ".join(parts) + " |", "|---|---:|---:|---:|" + "---:|" * len(parts)]
    for r in rows:
        cells = [f"{r['ndcg@10'][p]['sampled']:.4f} / {r['ndcg@10'][p]['full']:.4f}" for p in ["hybrid", *parts]]
        lines.append(f"| {r['fraction']:.0%} | {r['steps']} | {r['load_before'][0]:.1f} | " + " | ".join(cells) + " |")
    (OUT / "hybrid_parts.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
