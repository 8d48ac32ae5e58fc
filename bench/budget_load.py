"""Benchmark: does a budget give the same model on a quiet machine and on a loaded one?

The hybrid is trained with `--budget` (default cpu-10min) on the bundled generator's MovieLens-format log (its
default sequence signal), scored under the standard protocol (`llmrec.evaluation.benchmark`), twice: on the
machine as it is, and with --busy CPU-bound processes running beside it. A budget is a training length with early
stopping, so both runs should train the same model (nDCG@10 within 0.01); where the safety cap
(`train.max_minutes`) stops the loaded run before its validation levelled off, that run must say it is
under-trained. Writes bench/results/budget_load.{json,md} with commit, date, machine and load.

    .venv/bin/python bench/budget_load.py [--budget cpu-10min] [--users 943] [--items 1682] [--busy 2] [--set k=v ...]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

OUT = Path(__file__).parent / "results"


def _spin() -> None:
    while True:
        pass


def main() -> None:
    from llmrec.config import SyntheticSize, load_params
    from llmrec.data.ingest import load_source
    from llmrec.data.synthetic import generate
    from llmrec.evaluation.benchmark import StandardProtocol, run_benchmark

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", default="cpu-10min")
    parser.add_argument("--users", type=int, default=943)
    parser.add_argument("--items", type=int, default=1682)
    parser.add_argument("--per-day", type=int, default=4800, help="generator impressions per day (12 days)")
    parser.add_argument("--busy", type=int, default=2, help="CPU-bound processes beside the loaded run")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    args = parser.parse_args()
    root = Path(__file__).parents[1]
    params = load_params(root / "params.yaml", [f"budget={args.budget}", *args.overrides])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        size = SyntheticSize(n_items=args.items, n_users=args.users, days_per_period=6, impressions_per_day=args.per_day)
        generate(Path(tmp) / "ml", size, params.synthetic.seed, collaborative=params.synthetic.collaborative,
                 sequential=params.synthetic.sequential, format="movielens")
        dataset = load_source(Path(tmp) / "ml").dataset
        for condition in ("quiet", "loaded"):
            busy = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(args.busy if condition == "loaded" else 0)]
            for p in busy:
                p.start()
            before, started = os.getloadavg(), time.perf_counter()
            try:
                board = run_benchmark(dataset, ["hybrid"], Path(tmp) / condition, params, StandardProtocol(), progress=False)
            finally:
                for p in busy:
                    p.terminate()
            table = board["tables"]["train-only"]
            rows.append({"condition": condition, "busy_processes": len(busy), "seconds": round(time.perf_counter() - started, 1),
                         "load_before": [round(x, 2) for x in before], "load_after": [round(x, 2) for x in os.getloadavg()],
                         "sampled_ndcg@10": table["sampled"]["hybrid"]["ndcg@10"]["mean"],
                         "full_ndcg@10": table["full"]["hybrid"]["ndcg@10"]["mean"], "training": board["models"]["hybrid"]["setting"]})
            print(rows[-1], flush=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=root).stdout.strip()
    quiet, loaded = rows
    record = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "commit": commit, "budget": args.budget, "overrides": args.overrides,
              "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
              "data": {"users": args.users, "items": args.items, "per_day": args.per_day}, "rows": rows,
              "difference": {k: loaded[k] - quiet[k] for k in ("sampled_ndcg@10", "full_ndcg@10")}}
    OUT.mkdir(exist_ok=True)
    (OUT / "budget_load.json").write_text(json.dumps(record, indent=2))
    lines = ["# The same budget on a quiet and on a loaded machine", "",
             f"{record['date']}, commit {commit}, {os.cpu_count()} CPUs, {platform.platform()}. `--budget {args.budget}`, the hybrid, "
             f"standard protocol (train-only histories) on the generator's MovieLens-format log ({args.users} users, {args.items} items).", "",
             "| machine | wall time | load average (1/5/15 min) before → after | training | nDCG@10 sampled | full |", "|---|---:|---|---|---:|---:|"]
    for r in rows:
        load = f"{'/'.join(f'{x:.1f}' for x in r['load_before'])} → {'/'.join(f'{x:.1f}' for x in r['load_after'])}"
        lines.append(f"| {r['condition']} ({r['busy_processes']} busy processes) | {r['seconds']:.0f} s | {load} | {r['training']} | "
                     f"{r['sampled_ndcg@10']:.4f} | {r['full_ndcg@10']:.4f} |")
    lines += ["", f"Loaded − quiet: sampled {record['difference']['sampled_ndcg@10']:+.4f}, full {record['difference']['full_ndcg@10']:+.4f}."]
    (OUT / "budget_load.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
