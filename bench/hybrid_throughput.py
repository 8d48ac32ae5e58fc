"""Benchmark: training throughput of the hybrid (and of the SASRec baseline) on 2 CPU cores, in targets per second.

Data: MovieLens-format logs from the bundled generator at two sizes: the size of MovieLens-100K (943 users,
1,682 items, ~100k ratings) and the size of ml-latest-small (610 users, ~9.7k items, ~100k ratings: the large
catalogue). Model: the hybrid as `--budget cpu-10min` configures it, and SASRec (eval.sasrec). A target is one
predicted next item (a real position of a training window); the figure is targets per second over the timed
steps (the first WARMUP steps are not timed; no validation runs). Each (log, model) runs --repeats times in
its own process; the table gives the median, with the load average before and after.

To compare with another checkout, run the same script with that checkout first on PYTHONPATH
(`PYTHONPATH=/path/to/old python bench/hybrid_throughput.py --suffix _before`): it only uses functions
both have.

    .venv/bin/python bench/hybrid_throughput.py [--steps 30] [--repeats 3] [--suffix ""]
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OUT = Path(__file__).parent / "results"
WARMUP = 3
LOGS = {  # name: (users, items, impressions per day) of the generator's MovieLens format, 12 days
    "ml-100k size": (943, 1682, 4800),
    "ml-latest-small size (9.7k items)": (610, 9700, 4600),
}


def _params_file() -> Path:
    """params.yaml of the checkout whose llmrec is imported (so an older checkout reads its own)."""
    import llmrec

    return Path(llmrec.__file__).parents[1] / "params.yaml"


def _one(log: str, model: str, steps: int, data_dir: str) -> dict:
    """Train `steps` steps in this process; targets per second over the timed ones."""
    import numpy as np

    import llmrec
    from llmrec.config import SasrecParams, load_params
    from llmrec.data.ingest import load_source
    try:
        from llmrec.training.hybrid import fit_hybrid
    except ImportError:  # checkouts before training became a package
        from llmrec.training_hybrid import fit_hybrid

    params = load_params(_params_file(), ["budget=cpu-10min"])
    train = load_source(data_dir).dataset
    if model == "hybrid":
        hybrid, lr_scale = params.model.hybrid, 10.0
        settings = params.train.model_copy(update={"max_steps": steps, "max_epochs": 0, "eval_every": 0, "max_minutes": 0,
                                                   "checkpoint_every": 0, "device": "cpu"})
    else:
        sasrec = SasrecParams()
        hybrid, lr_scale = sasrec.hybrid(), 1.0
        settings = params.train.model_copy(update={"max_steps": steps, "max_epochs": 0, "eval_every": 0, "max_minutes": 0,
                                                   "checkpoint_every": 0, "device": "cpu", "batch_size": sasrec.batch_size,
                                                   "lr": sasrec.lr})
        settings = settings.model_copy(update={k: 0 for k in ("eval_every_epochs",) if k in type(settings).model_fields})
    stamps: list[float] = []
    with tempfile.TemporaryDirectory() as out:
        model_obj, result = fit_hybrid(train, hybrid, settings, out, backbone=params.model.backbone,
                                       max_length=params.model.max_length, progress=False, lr_scale=lr_scale,
                                       on_step=lambda step, loss: stamps.append(time.perf_counter()))
    del model_obj, result
    timed = np.diff(stamps[WARMUP - 1 :])
    return {"log": log, "model": model, "steps": len(timed), "seconds_per_step": float(np.median(timed)),
            "windows_per_step": settings.batch_size, "llmrec": str(Path(llmrec.__file__).parent)}


def _targets_per_window(data_dir: str, model: str) -> float:
    """Mean real targets per training window (what one example of a step predicts)."""
    import numpy as np

    from llmrec.config import SasrecParams, load_params
    from llmrec.data.ingest import load_source

    params = load_params(_params_file(), ["budget=cpu-10min"])
    length = params.model.hybrid.sequence_length if model == "hybrid" else SasrecParams().sequence_length
    counts = load_source(data_dir).dataset.interactions.groupby("user_id").size().to_numpy()
    windows = np.ceil(counts / length)
    return float(counts.sum() / windows.sum())


def _generate(folder: Path, users: int, items: int, per_day: int) -> None:
    from llmrec.config import SyntheticSize, load_params
    from llmrec.data.synthetic import generate

    params = load_params(_params_file())
    # no sequence signal: byte-identical logs for checkouts from before the generator had it (throughput, not quality)
    extra = {"sequential": 0.0} if "sequential" in inspect.signature(generate).parameters else {}
    generate(folder, SyntheticSize(n_items=items, n_users=users, days_per_period=6, impressions_per_day=per_day),
             params.synthetic.seed, collaborative=params.synthetic.collaborative, format="movielens", **extra)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--suffix", default="")
    parser.add_argument("--models", nargs="+", default=["hybrid", "sasrec"])
    parser.add_argument("--one", nargs=3, metavar=("LOG", "MODEL", "DATA"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(_one(args.one[0], args.one[1], args.steps, args.one[2])))
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for log, (users, items, per_day) in LOGS.items():
            folder = Path(tmp) / log.split()[0]
            _generate(folder, users, items, per_day)
            for model in args.models:
                per_window = _targets_per_window(str(folder), model)
                runs = []
                for _ in range(args.repeats):
                    before = os.getloadavg()[0]
                    done = subprocess.run([sys.executable, __file__, "--steps", str(args.steps), "--one", log, model, str(folder)],
                                          capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
                    if done.returncode:
                        raise SystemExit(done.stderr[-3000:])
                    run = json.loads(done.stdout.strip().splitlines()[-1])
                    run.update(load_before=before, load_after=os.getloadavg()[0])
                    runs.append(run)
                    print(log, model, f"{run['seconds_per_step']:.3f} s/step", f"load {before:.1f}", flush=True)
                seconds = sorted(r["seconds_per_step"] for r in runs)[len(runs) // 2]
                rows.append({"log": log, "model": model, "median_seconds_per_step": seconds,
                             "targets_per_second": runs[0]["windows_per_step"] * per_window / seconds,
                             "targets_per_window": per_window, "runs": runs})
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent).stdout.strip()
    record = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "commit": commit, "llmrec": rows[0]["runs"][0]["llmrec"],
              "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()}, "steps": args.steps,
              "warmup": WARMUP, "rows": rows}
    OUT.mkdir(exist_ok=True)
    (OUT / f"hybrid_throughput{args.suffix}.json").write_text(json.dumps(record, indent=2))
    lines = [f"# Hybrid training throughput{args.suffix.replace('_', ' ')}", "",
             f"{record['date']}, commit {commit} (code from {record['llmrec']}), {os.cpu_count()} CPUs, {platform.platform()}; "
             f"{args.steps} steps per run ({WARMUP} warm-up), median of {args.repeats} runs, each in its own process.", "",
             "| log | model | s / step (median) | targets / s | load average (1 min) before / after each run |",
             "|---|---|---:|---:|---|"]
    for r in rows:
        loads = ", ".join(f"{x['load_before']:.1f}/{x['load_after']:.1f}" for x in r["runs"])
        lines.append(f"| {r['log']} | {r['model']} | {r['median_seconds_per_step']:.3f} | {r['targets_per_second']:.0f} | {loads} |")
    (OUT / f"hybrid_throughput{args.suffix}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
