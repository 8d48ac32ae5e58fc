"""Benchmark: does the MovieLens-format generator's sequence signal (`synthetic.sequential`) reward a sequence
model the way real movie logs do (a converged SASRec ahead of a tuned EASE)?

For each knob value: generate a MovieLens-format log (`collaborative` from params.yaml), split leave-last-out
(each user's last rating is the test), and fit on the training part
  popularity   ratings per item
  tfidf        TF-IDF of titles and genres (does text still carry signal?)
  ease         EASE, l2 chosen on a validation slice (each user's last training rating, held out of a refit)
  sasrec       2 blocks x 64 dims, dropout 0.2, lr 1e-3, full-softmax cross-entropy, trained until its own
               validation (the last training rating of up to 1000 users) stops improving
then score them with llmrec's evaluation: `sampled` (each test rating against 99 sampled negatives) and
`catalogue` (against every item known at its time, minus every item the user rated before: histories here
are not cut at `context.HISTORY_KEEP`, so EASE reads the whole user row and nothing consumed is a negative).
The default size is about MovieLens-100K's (1,700 items, ~1,000 users, ~90 ratings each): on a sparser log
(3,000 items, ~25 ratings per user) SASRec's validation peaked within a few epochs at knobs 0 and 0.5 and it
stayed below EASE on sampled negatives even at 1 (a run during development, not kept).
Writes bench/results/sequence_signal.{json,md} (commit, date, machine, load average).

    .venv/bin/python bench/sequence_signal.py [--knobs 0 0.5] [--users 1000] [--impressions-per-day 4000]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from llmrec.config import SasrecParams, SyntheticSize, TrainParams, load_params
from llmrec.data.context import derived_history, with_context
from llmrec.data.contract import Dataset
from llmrec.data.ingest import load_source
from llmrec.data.split import leave_last_out_split
from llmrec.data.synthetic import generate
from llmrec.evaluation.baselines import UNSCORABLE, Scorer, ease_scorer, tfidf_scorer
from llmrec.evaluation.evaluate import EvalReport, evaluate, popularity_scorer
from llmrec.evaluation.stats import paired_bootstrap
from llmrec.training.hybrid import fit_hybrid

OUT = Path(__file__).parent / "results"
ROOT = Path(__file__).parents[1]
METRIC = "ndcg@10"
SEED = 13


@dataclass
class Protocols:
    """What the rankers are scored on: the test (or validation) events with their context, the data before them."""

    holdout: Dataset
    train: Dataset
    log: Dataset


def full_context(part: Dataset, log: Dataset, negatives: int) -> Dataset:
    """`part` with sampled negatives and each event's whole history before it (not cut to a window)."""
    filled = with_context(part, log, negatives, SEED)
    whole = derived_history(log, filled.impressions, max_len=10**9)
    return Dataset(filled.items, filled.impressions.assign(history=whole), filled.interactions, filled.source)


def score(protocols: Protocols, scorers: dict[str, Scorer], catalogue_events: int) -> EvalReport:
    """Both protocols for every ranker (the catalogue one on `catalogue_events` seeded test events)."""
    return evaluate(protocols.holdout, protocols.train, protocols.log, scorers, ks=[10], primary=METRIC, seed=SEED,
                    catalogue_scorers=list(scorers), catalogue_impressions=catalogue_events)


def tune_ease(train: Dataset, grid: list[float], catalogue_events: int) -> tuple[float, dict[float, dict[str, float]]]:
    """EASE's l2 with the best catalogue nDCG@10 on the validation slice (each user's last training event, EASE
    refitted without them), and every l2's sampled / catalogue nDCG@10 there."""
    inner = leave_last_out_split(train)
    protocols = Protocols(full_context(inner.holdout, train, 99), inner.train, train)
    report = score(protocols, {f"ease_{l2:g}": ease_scorer(inner.train, l2) for l2 in grid}, catalogue_events)
    found = {l2: {p: report.protocols[p].metrics[f"ease_{l2:g}"][METRIC] for p in report.protocols} for l2 in grid}
    return max(grid, key=lambda l2: found[l2]["catalogue"]), found


def train_sasrec(train: Dataset, items: pd.DataFrame, max_epochs: float, patience: int, eval_epochs: float,
                 folder: Path) -> tuple[Scorer, dict]:
    """SASRec (the reference setting for movie logs) trained until its validation stops improving, and how long."""
    params = SasrecParams(dim=64, layers=2, heads=2, sequence_length=50, dropout=0.2, batch_size=64, lr=1e-3)
    windows = sum(-(-int(n) // (params.sequence_length + 1)) for n in train.interactions.groupby("user_id").size())
    per_epoch = max(1, round(windows / params.batch_size))
    train_params = TrainParams(max_steps=10**7, batch_size=params.batch_size, lr=params.lr, warmup_ratio=0.0, seed=SEED,
                               device="cpu", checkpoint_every=0, eval_every=max(1, round(eval_epochs * per_epoch)),
                               early_stopping_patience=patience, max_minutes=0, max_epochs=max_epochs)
    start = time.perf_counter()
    model, result = fit_hybrid(train, params.hybrid(), train_params, folder, progress=False, desc="SASRec", lr_scale=1.0)
    best = max(result.validation, key=lambda v: v["ndcg_full"]) if result.validation else {"step": result.steps}
    info = {"steps": result.steps, "windows": result.examples, "epochs": result.steps * params.batch_size / result.examples,
            "best_step": best["step"], "best_epoch": best["step"] * params.batch_size / result.examples,
            "seconds": time.perf_counter() - start, "validation": result.validation}
    scores, known = model.scorer(items), set(model.vocab)
    return lambda frame: np.where(frame["item_id"].astype(str).isin(known), scores(frame), UNSCORABLE), info


def progress(knob: float, seconds: dict[str, float], phase: str, start: float) -> None:
    """Record how long a phase took and say so (runs take minutes on a shared machine)."""
    seconds[phase] = time.perf_counter() - start
    print(f"sequential {knob:g}: {phase} {seconds[phase]:.0f} s (load {os.getloadavg()[0]:.1f})", flush=True)


def measure(knob: float, size: SyntheticSize, collaborative: float, args: argparse.Namespace, tmp: Path) -> dict:
    """Generate one world, fit and score every ranker on it; the record of the run."""
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    generate(tmp / f"ml_{knob:g}", size, args.seed, collaborative=collaborative, format="movielens", sequential=knob)
    progress(knob, seconds, "generate", start)
    dataset = load_source(tmp / f"ml_{knob:g}").dataset
    split = leave_last_out_split(dataset)
    start = time.perf_counter()
    l2, grid = tune_ease(split.train, args.l2, args.catalogue_events)
    progress(knob, seconds, "tune_ease", start)
    start = time.perf_counter()
    sasrec, sasrec_info = train_sasrec(split.train, dataset.items, args.max_epochs, args.patience, args.eval_epochs, tmp / f"sasrec_{knob:g}")
    progress(knob, seconds, "sasrec", start)
    scorers = {"popularity": popularity_scorer(split.train), "tfidf": tfidf_scorer(split.train, dataset.items),
               "ease": ease_scorer(split.train, l2), "sasrec": sasrec}
    start = time.perf_counter()
    report = score(Protocols(full_context(split.holdout, dataset, 99), split.train, dataset), scorers, args.catalogue_events)
    progress(knob, seconds, "evaluate", start)
    sizes = dataset.interactions.groupby("user_id").size()
    return {
        "sequential": knob,
        "data": {"ratings": len(dataset.interactions), "users": int(sizes.size), "items": int(dataset.interactions["item_id"].nunique()),
                 "ratings_per_user_median": float(sizes.median()), "test_events": int(split.holdout.impressions.shape[0])},
        "ease": {"l2": l2, "validation": {f"{k:g}": v for k, v in grid.items()}},
        "sasrec": sasrec_info,
        "protocols": {name: {"events": p.n_impressions, "metrics": {r: m[METRIC] for r, m in p.metrics.items()},
                             "intervals": {r: list(ci[METRIC]) for r, ci in p.intervals.items()}}
                      for name, p in report.protocols.items()},
        "sasrec_minus_ease": {name: paired_bootstrap(p.per_impression["sasrec"], p.per_impression["ease"], METRIC, seed=SEED)
                              for name, p in report.protocols.items()},
        "seconds": seconds,
        "load_average": os.getloadavg(),
    }


def markdown(record: dict) -> str:
    """The results table and how they were made."""
    lines = [f"nDCG@10 on MovieLens-format generated logs (leave-last-out; {record['size']}, collaborative "
             f"{record['collaborative']}, seed {record['seed']}); sampled = the test rating vs 99 sampled negatives, catalogue = "
             f"vs every known item minus everything the user rated before ({record['catalogue_events']} test events at most). "
             "95 % bootstrap intervals.", "",
             "| sequential | ranker | sampled | catalogue |", "|---:|---|---|---|"]
    for run in record["runs"]:
        p = run["protocols"]
        for ranker in p["sampled"]["metrics"]:
            cells = [f"{p[n]['metrics'][ranker]:.3f} [{p[n]['intervals'][ranker][0]:.3f}, {p[n]['intervals'][ranker][1]:.3f}]"
                     for n in ("sampled", "catalogue")]
            lines.append(f"| {run['sequential']:g} | {ranker} | {cells[0]} | {cells[1]} |")
        diff = run["sasrec_minus_ease"]
        cells = [f"{diff[n]['difference']:+.3f} [{diff[n]['low']:+.3f}, {diff[n]['high']:+.3f}]" for n in ("sampled", "catalogue")]
        lines.append(f"| {run['sequential']:g} | **sasrec − ease** | {cells[0]} | {cells[1]} |")
    lines += ["", "| sequential | ratings | users | median per user | EASE l2 (validation) | SASRec epochs (best) | "
              "generate s | SASRec s | load average |", "|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for run in record["runs"]:
        d, s = run["data"], run["sasrec"]
        lines.append(f"| {run['sequential']:g} | {d['ratings']} | {d['users']} | {d['ratings_per_user_median']:g} | "
                     f"{run['ease']['l2']:g} | {s['epochs']:.0f} ({s['best_epoch']:.0f}) | {run['seconds']['generate']:.1f} | "
                     f"{run['seconds']['sasrec']:.0f} | {', '.join(f'{x:.2f}' for x in run['load_average'])} |")
    lines += ["", f"Commit {record['commit']}, {record['date']}, {record['machine']}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--knobs", type=float, nargs="+", default=[0.0, 0.5], help="values of synthetic.sequential")
    parser.add_argument("--items", type=int, default=1700)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--days-per-period", type=int, default=6)
    parser.add_argument("--impressions-per-day", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--l2", type=float, nargs="+", default=[50.0, 150.0, 500.0, 1500.0, 5000.0], help="EASE l2 grid")
    parser.add_argument("--max-epochs", type=float, default=200)
    parser.add_argument("--patience", type=int, default=10, help="validations without improvement before SASRec stops")
    parser.add_argument("--eval-epochs", type=float, default=5.0,
                        help="epochs between SASRec's validations (its curve can stay flat for tens of epochs, then rise)")
    parser.add_argument("--catalogue-events", type=int, default=1000, help="test events ranked against the whole catalogue")
    parser.add_argument("--name", default="sequence_signal", help="results file name (bench/results/NAME.{json,md})")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")  # SASRec's validation curve
    torch.set_num_threads(1)  # a small model on shared cores: a second thread mostly spins (measured several times slower)
    params = load_params(ROOT / "params.yaml")
    size = SyntheticSize(n_items=args.items, n_users=args.users, days_per_period=args.days_per_period,
                         impressions_per_day=args.impressions_per_day)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    record = {"commit": commit, "date": time.strftime("%Y-%m-%d %H:%M"), "seed": args.seed,
              "machine": f"{platform.platform()}, {os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads)",
              "size": size.model_dump(), "collaborative": params.synthetic.collaborative,
              "catalogue_events": args.catalogue_events, "runs": []}
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for knob in args.knobs:  # written after each knob: a long run leaves what it finished
            record["runs"].append(measure(knob, size, params.synthetic.collaborative, args, Path(tmp)))
            (OUT / f"{args.name}.json").write_text(json.dumps(record, indent=2, default=float))
            (OUT / f"{args.name}.md").write_text(markdown(record))
    print(markdown(record))


if __name__ == "__main__":
    main()
