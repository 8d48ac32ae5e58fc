"""Benchmark: batch recommendations (`llmrec recommend --all-users`), users per second, two-tower and hybrid.

The demo's data (the bundled generator, `small` preset, both periods: the state after `make demo`), the
bundled MiniLM backbone, each model trained for a few steps only (speed does not depend on the weights):
the two-tower with params.yaml's settings, the hybrid with the cpu-3min budget's. Each model is registered
as champion in a throwaway sqlite registry and `llmrec.batch.recommend_all` writes every user's top-k over
the whole catalogue (minus the user's history). Reported per model: users, catalogue size, the time to
download and load the model and encode the catalogue's item vectors (once per run), the scoring rate (users/s
over every chunk: user vectors, one matrix product, top-k, writing the part), the whole run, and peak RSS. Writes bench/results/batch_recommend.{json,md} with the commit, date, machine and load average.

    .venv/bin/python bench/batch_recommend.py [--users 0] [--chunk-users 200] [--k 10]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

OUT = Path(__file__).parent / "results"
REPO = Path(__file__).resolve().parents[1]


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def commit() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True, text=True).stdout.strip()
        return rev + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def run_model(kind: str, overrides: list[str], args: argparse.Namespace) -> dict:
    from llmrec import pipeline, tracking
    from llmrec.batch import recommend_all
    from llmrec.config import load_params

    params = load_params(REPO / "params.yaml", [
        "data.path=data/synthetic", f"batch.chunk_users={args.chunk_users}", f"batch.k={args.k}", f"train.out=outputs/{kind}",
        "train.checkpoint_every=0", *overrides,
    ])
    pipeline.run_ingest(params)
    started = time.perf_counter()
    trained = pipeline.run_train(params, progress=False)
    registered = tracking.register_model(params.train.out, Path(params.data.prepared) / "items.parquet", model_name=kind,
                                         experiment="bench", params={}, metrics={}, tags={})
    tracking.promote(kind, registered.version, "bench")
    setup = time.perf_counter() - started
    params = params.model_copy(update={"tracking": params.tracking.model_copy(update={"model_name": kind})})
    users = None
    if args.users:
        from llmrec.batch import current_histories

        users = sorted(current_histories(pipeline.load_prepared(params)))[: args.users]
    load_before = os.getloadavg()
    wall = time.perf_counter()
    result = recommend_all(params, users=users, out=f"outputs/{kind}.parquet", progress=False)
    wall = time.perf_counter() - wall
    return {
        "model": kind, "train_steps": trained["steps"], "setup_seconds": setup, "users": result["users"],
        "catalogue_items": int(len(pipeline.load_prepared(params).items)), "k": args.k, "chunk_users": args.chunk_users,
        "load_and_encode_seconds": wall - result["seconds"], "chunk_seconds": result["chunk_seconds"],
        "scoring_users_per_second": result["users_per_second"], "scoring_seconds": result["seconds"],
        "wall_seconds": wall, "wall_users_per_second": result["users"] / wall, "rows": result["rows"],
        "load_average_before": load_before, "load_average_after": os.getloadavg(), "peak_rss_mib": peak_rss_mib(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=0, help="only the first N users (0 = every user)")
    parser.add_argument("--chunk-users", type=int, default=200)
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()
    from llmrec.config import load_params
    from llmrec.data.synthetic import generate

    syn = load_params(REPO / "params.yaml").synthetic
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
        os.chdir(tmp)
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        generate(Path("data/synthetic"), syn.size(), syn.seed, (1, 2), collaborative=syn.collaborative)
        rows.append(run_model("two-tower", ["model.type=two-tower", "train.max_steps=2"], args))
        rows.append(run_model("hybrid", ["budget=cpu-3min", "train.max_steps=2"], args))
    machine = {
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
        "python": sys.version.split()[0], "torch": torch.__version__,
    }
    result = {"commit": commit(), "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine,
              "data": f"synthetic {syn.preset} preset, seed {syn.seed}, periods 1 and 2 (the state after `make demo`)", "runs": rows}
    OUT.mkdir(exist_ok=True)
    (OUT / "batch_recommend.json").write_text(json.dumps(result, indent=2))
    lines = [
        "# Batch recommendations: users per second",
        "",
        f"`bench/batch_recommend.py`, commit {result['commit']}, {result['date']}; {result['data']}.",
        "",
        "| model | users | catalogue items | load model + encode catalogue | scoring: users/s | whole run | users/s (whole run) | peak RSS |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['users']:,} | {r['catalogue_items']:,} | {r['load_and_encode_seconds']:.1f} s | "
            f"{r['scoring_users_per_second']:,.0f} | {r['wall_seconds']:.1f} s | {r['wall_users_per_second']:,.0f} | "
            f"{r['peak_rss_mib']:,.0f} MiB |"
        )
    loads = ", ".join(f"{r['model']}: {r['load_average_before'][0]:.1f} before / {r['load_average_after'][0]:.1f} after" for r in rows)
    lines += [
        "",
        f"k = {args.k}, {args.chunk_users} users per chunk; every item of the prepared tables is a candidate (minus the "
        "user's history). The whole run = loading (download the model, encode every item's text with the backbone: once "
        "per run) + scoring (per chunk: user vectors, one matrix product, top-k, the part file) + joining the parts. "
        "Models trained for 2 steps: speed does not depend on the weights.",
        f"Machine: {machine['cpu_count']} cores (shared with other jobs), {machine['torch_threads']} torch threads, "
        f"{machine['platform']}, torch {machine['torch']}; load average (1 min) {loads}.",
    ]
    (OUT / "batch_recommend.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
