"""Benchmark: candidates scored per second, cross-encoder vs two-tower with cached item vectors.

Same backbone (the bundled all-MiniLM-L6-v2, untrained heads/towers: speed does not depend on the
weights), same catalogue (10,000 items from the bundled synthetic generator's world), one user
with a 20-item history. Cases:

  (a) 100 candidates for one user;
  (b) the whole 10,000-item catalogue for one user. The cross-encoder is timed on the first
      1,000 catalogue items and its 10k figure is extrapolated (same rate, 10x the time): the
      cost of a pair model is linear in the number of pairs.

Cross-encoder: `CrossEncoder.score` on (user text of the 3 newest history titles, candidate text)
pairs, as `llmrec evaluate` renders them. Two-tower: `TwoTower.score_frame` (a) and
`TwoTower.recommend` (b) once every item vector is cached; the user vector (pooling of the cached
history vectors) is computed inside every timed call. The one-off cost of filling the cache for the
10k catalogue is reported separately, as is peak RSS. Each figure is the median of 3 runs after
one warm-up. Writes bench/results/scoring_speed.{json,md}.

    .venv/bin/python bench/scoring_speed.py [--threads 1] [--device cuda --suffix _gpu]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from llmrec.config import SyntheticSize, load_params
from llmrec.data.synthetic import build_world
from llmrec.models.backbone import resolve_backbone
from llmrec.models.cross_encoder import CrossEncoder
from llmrec.models.text import TextConfig, item_texts, user_text
from llmrec.models.two_tower import DEFAULT_MAX_HISTORY, TwoTower

OUT = Path(__file__).parent / "results"
CATALOGUE = 10_000
FEW = 100
CROSS_SAMPLE = 1_000  # cross-encoder pairs actually timed for the catalogue case
REPEATS = 3


def peak_rss_mib() -> float:
    """Peak RSS since the last `reset_peak_rss` (Linux VmHWM); elsewhere the process-lifetime peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        return True
    except OSError:
        return False


def catalogue(n: int, seed: int) -> pd.DataFrame:
    """n items of the synthetic world (the generator writes only the items its logs reference)."""
    world = build_world(SyntheticSize(n_items=n, n_users=10, days_per_period=2, impressions_per_day=10), seed)
    rows = [r.split("\t") for r in world.news_rows]
    return pd.DataFrame(
        {
            "item_id": world.news_ids,
            "title": [r[2] for r in rows],
            "text": [r[3] for r in rows],
            "category": [r[0] for r in rows],
            "subcategory": [r[1] for r in rows],
        }
    )


def timed(fn, repeats: int = REPEATS) -> tuple[float, list[float]]:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: on a shared 2-core machine 2 threads ran ~4x slower)")
    parser.add_argument("--device", default="cpu", help="cpu | cuda")
    parser.add_argument("--suffix", default="", help="results file suffix, e.g. _gpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    params = load_params(Path(__file__).parents[1] / "params.yaml")
    batch_size = params.eval.batch_size
    load_before = os.getloadavg()

    items = catalogue(CATALOGUE, params.synthetic.seed)
    rng = np.random.default_rng(0)
    history = list(rng.choice(items["item_id"].to_numpy(), size=DEFAULT_MAX_HISTORY, replace=False))
    candidates = [i for i in items["item_id"] if i not in set(history)]
    few = candidates[:FEW]
    backbone = resolve_backbone("default")
    rss = {"start": peak_rss_mib()}
    per_phase = reset_peak_rss()

    # -- cross-encoder ---------------------------------------------------------------------------------------------
    ce_text = TextConfig(max_history=params.model.cross_encoder.max_history)
    cross = CrossEncoder.from_backbone(backbone, ce_text, params.model.max_length, "default", args.device)
    ce_texts = item_texts(items, ce_text)
    user = user_text(history, ce_texts, ce_text)

    def cross_score(ids):
        return lambda: cross.score([user] * len(ids), [ce_texts[i] for i in ids], batch_size=batch_size)

    ce_few, ce_few_runs = timed(cross_score(few))
    ce_cat, ce_cat_runs = timed(cross_score(candidates[:CROSS_SAMPLE]))
    rss["cross_encoder"] = peak_rss_mib()
    cross = None  # free the cross-encoder before the two-tower's memory is measured
    import gc

    gc.collect()
    reset_peak_rss()

    # -- two-tower -------------------------------------------------------------------------------------------------
    tt = TwoTower.from_backbone(backbone, TextConfig(max_history=DEFAULT_MAX_HISTORY), params.model.max_length, "default", args.device)
    frame_few = pd.DataFrame({"impression_id": "q", "item_id": few, "history": " ".join(history), "label": 0})
    tt_texts = item_texts(items, tt.text)

    def cold_few():
        tt.clear_cache()
        tt.score_frame(frame_few, items, batch_size=batch_size)

    tt_cold, tt_cold_runs = timed(cold_few)  # no cache: encodes the 100 candidates + 20 history items
    tt.clear_cache()
    tt.encode_items(few[:batch_size], tt_texts, batch_size)  # warm-up of the encoder
    tt.clear_cache()
    start = time.perf_counter()
    ids, matrix = tt.item_matrix(items, batch_size=batch_size)
    encode_seconds = time.perf_counter() - start
    assert len(ids) == CATALOGUE and tt.encoded_texts > 0
    encoded = tt.encoded_texts
    score_few = tt.scorer(items, batch_size=batch_size)  # as evaluation and serving use it: texts rendered once
    tt_few, tt_few_runs = timed(lambda: score_few(frame_few))
    tt_cat, tt_cat_runs = timed(lambda: tt.recommend(history, items, k=10))
    assert tt.encoded_texts == encoded, "the timed two-tower calls must not encode items"
    rss["two_tower"] = peak_rss_mib()
    load_after = os.getloadavg()

    n_cat = len(candidates)
    rows = [
        {"case": f"(a) {FEW} candidates, 1 user", "model": "cross-encoder", "candidates": FEW,
         "seconds": ce_few, "runs": ce_few_runs, "measured": True},
        {"case": f"(a) {FEW} candidates, 1 user", "model": "two-tower, cold cache (encodes 100 + 20 history items)",
         "candidates": FEW, "seconds": tt_cold, "runs": tt_cold_runs, "measured": True},
        {"case": f"(a) {FEW} candidates, 1 user", "model": "two-tower, cached item vectors (scorer)", "candidates": FEW,
         "seconds": tt_few, "runs": tt_few_runs, "measured": True},
        {"case": f"(b) {CATALOGUE:,}-item catalogue minus the 20 history items, 1 user", "model": f"cross-encoder (extrapolated from {CROSS_SAMPLE:,})",
         "candidates": n_cat, "seconds": ce_cat * n_cat / CROSS_SAMPLE, "runs": ce_cat_runs, "measured": False},
        {"case": f"(b) {CATALOGUE:,}-item catalogue minus the 20 history items, 1 user", "model": "two-tower, cached item vectors (recommend, top 10)",
         "candidates": n_cat, "seconds": tt_cat, "runs": tt_cat_runs, "measured": True},
    ]
    for row in rows:
        row["candidates_per_second"] = row["candidates"] / row["seconds"]
    result = {
        "machine": {"cpu_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "torch": torch.__version__, "device": args.device, "load_average_before": load_before, "load_average_after": load_after},
        "backbone": "all-MiniLM-L6-v2 (bundled), untrained head / towers",
        "batch_size": batch_size,
        "max_length": params.model.max_length,
        "cross_encoder_history_titles": params.model.cross_encoder.max_history,
        "two_tower_history_items": DEFAULT_MAX_HISTORY,
        "rows": rows,
        "two_tower_catalogue_encoding": {"items": CATALOGUE, "texts_encoded": encoded, "seconds": encode_seconds,
                                         "items_per_second": CATALOGUE / encode_seconds,
                                         "matrix_mib": matrix.numel() * matrix.element_size() / 2**20},
        "speedup_cached_vs_cross": {"a": ce_few / tt_few, "b": (ce_cat * n_cat / CROSS_SAMPLE) / tt_cat},
        # cross-encoder pairs that take as long as encoding the whole catalogue once
        "break_even_candidates": encode_seconds * (CROSS_SAMPLE / ce_cat),
        "peak_rss_mib": rss,
        "peak_rss_per_phase": per_phase,
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"scoring_speed{args.suffix}.json").write_text(json.dumps(result, indent=2))
    md = [
        "| case | model | candidates/s | seconds (median of 3) |",
        "|---|---|---:|---:|",
        *(f"| {r['case']} | {r['model']} | {r['candidates_per_second']:,.0f} | {r['seconds']:.4f}"
          f"{' (extrapolated)' if not r['measured'] else ''} |" for r in rows),
        "",
        f"One-off cost of the two-tower item cache: {CATALOGUE:,} items encoded in {encode_seconds:.1f} s "
        f"({CATALOGUE / encode_seconds:.0f} items/s; the matrix takes {result['two_tower_catalogue_encoding']['matrix_mib']:.1f} MiB). "
        f"That equals the cross-encoder scoring {result['break_even_candidates']:,.0f} pairs.",
        f"Cached two-tower vs cross-encoder: {result['speedup_cached_vs_cross']['a']:,.0f}x on (a), "
        f"{result['speedup_cached_vs_cross']['b']:,.0f}x on (b). The cross-encoder's 10k figure is extrapolated "
        f"from {CROSS_SAMPLE:,} timed pairs (its cost is linear in pairs).",
        f"Peak RSS (MiB{', per phase: the peak is reset between phases' if per_phase else ', whole process so far'}): "
        f"imports + data {rss['start']:.0f}, cross-encoder {rss['cross_encoder']:.0f}, two-tower incl. the 10k cache "
        f"{rss['two_tower']:.0f}. (b) for the two-tower includes rendering the 10k item texts, which `recommend` does per call.",
        f"Machine: {torch.get_num_threads()} torch thread(s) of {os.cpu_count()} shared cores, load average "
        f"{load_before[0]:.1f} before / {load_after[0]:.1f} after, {platform.platform()}, torch {torch.__version__}. "
        f"Batch size {batch_size}, max_length {params.model.max_length}; cross-encoder user text = "
        f"{params.model.cross_encoder.max_history} newest history titles, two-tower user = pooled vectors of {DEFAULT_MAX_HISTORY} history items.",
    ]
    (OUT / f"scoring_speed{args.suffix}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
