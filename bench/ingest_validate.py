"""Benchmark: ingest + validate throughput (rows/s) and peak memory, per source format and size.

Writes MovieLens-layout (ratings.csv + movies.csv) and MIND-layout files of a given number of
interaction rows into a temp folder, then runs each stage in its own process (so peak RSS is the
stage's own) the way the pipeline does: `ingest` (read + checks + canonical Parquet) and
`validate` (Great Expectations suites + Data Docs). Writes bench/results/ingest_validate.{json,md}.

    .venv/bin/python bench/ingest_validate.py [--rows 1000000 --rows 4000000] [--formats ml-latest mind]

Results of earlier runs at other sizes are kept in the JSON/markdown (a 25M-row run takes ~10 min).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd

OUT = Path(__file__).parent / "results"
GENRES = ["Action", "Adventure", "Animation", "Children", "Comedy", "Crime", "Drama", "Horror", "Romance", "Sci-Fi", "Thriller"]
START = 946684800  # 2000-01-01


def write_movielens(folder: Path, rows: int, seed: int = 0) -> None:
    """ml-latest layout with Zipf-like item popularity and ~150 ratings per user."""
    rng = np.random.default_rng(seed)
    n_items, n_users = max(100, rows // 100), max(10, rows // 150)
    folder.mkdir(parents=True)
    genres = ["|".join(rng.choice(GENRES, size=rng.integers(1, 4), replace=False)) for _ in range(n_items)]
    pd.DataFrame(
        {"movieId": np.arange(1, n_items + 1), "title": [f"Movie number {i}, The ({1950 + i % 70})" for i in range(n_items)], "genres": genres}
    ).to_csv(folder / "movies.csv", index=False)
    users = rng.integers(1, n_users + 1, rows * 2)
    items = np.minimum((rng.pareto(1.2, rows * 2) * n_items / 20).astype(np.int64) + 1, n_items)
    ratings = pd.DataFrame({"userId": users, "movieId": items}).drop_duplicates().head(rows)
    ratings["rating"] = rng.integers(1, 11, len(ratings)) / 2
    ratings["timestamp"] = START + rng.integers(0, 3 * 365 * 86400, len(ratings))
    ratings.to_csv(folder / "ratings.csv", index=False)


def write_mind(folder: Path, rows: int, seed: int = 0) -> None:
    """MIND layout: impressions of ~30 candidates, 4 % clicks, histories of up to 20 items."""
    rng = np.random.default_rng(seed)
    n_items, per_imp = max(100, rows // 50), 30
    n_imps = rows // per_imp
    folder.mkdir(parents=True)
    with (folder / "news.tsv").open("w") as fh:
        for i in range(n_items):
            fh.write(f"N{i}\tnews\tsub{i % 7}\tHeadline number {i}\tAbstract {i}\turl\t[]\t[]\n")
    hours = rng.integers(0, 24 * 6, n_imps)
    with (folder / "behaviors.tsv").open("w") as fh:
        for j in range(n_imps):
            hist = " ".join(f"N{i}" for i in rng.integers(0, n_items, rng.integers(0, 20)))
            cands = rng.choice(n_items, per_imp, replace=False)
            labels = rng.random(per_imp) < 0.04
            labels[0] = True
            imp = " ".join(f"N{c}-{int(lab)}" for c, lab in zip(cands, labels))
            t = pd.Timestamp("2019-11-09") + pd.Timedelta(hours=int(hours[j]), seconds=j % 3600)
            fh.write(f"{j + 1}\tU{rng.integers(0, n_imps // 5 + 1)}\t{t.strftime('%m/%d/%Y %I:%M:%S %p').lstrip('0')}\t{hist}\t{imp}\n")


STAGE = textwrap.dedent(
    """
    import json, resource, sys, time
    from pathlib import Path
    stage, source, prepared, report = sys.argv[1:5]
    t0 = time.perf_counter()
    if stage == "ingest":
        from llmrec.data.ingest import ingest
        result = ingest(source, prepared)
        rows = len(result.dataset.interactions)
    else:
        from llmrec.data.contract import Dataset
        from llmrec.validation import validate_dataset
        dataset = Dataset.load(prepared)
        rows = len(dataset.interactions)
        outcome = validate_dataset(dataset, report)
        assert outcome.success, outcome.summary()
    seconds = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"stage": stage, "rows": rows, "seconds": seconds, "peak_rss_mb": peak_mb}))
    """
)


def run_stage(stage: str, source: Path, prepared: Path, report: Path) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", STAGE, stage, str(source), str(prepared), str(report)], check=True, capture_output=True, text=True
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["rows_per_s"] = result["rows"] / result["seconds"]
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, action="append", help="interaction rows (repeatable; default 1,000,000)")
    ap.add_argument("--formats", nargs="+", default=["ml-latest", "mind"], choices=["ml-latest", "mind"])
    args = ap.parse_args()
    sizes = args.rows or [1_000_000]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for fmt in args.formats:
            for rows in sizes:
                src = root / f"{fmt}-{rows}"
                (write_movielens if fmt == "ml-latest" else write_mind)(src, rows)
                size_mb = sum(p.stat().st_size for p in src.iterdir()) / 2**20
                prepared, report = root / f"prep-{fmt}-{rows}", root / f"report-{fmt}-{rows}"
                for stage in ("ingest", "validate"):
                    r = run_stage(stage, src, prepared, report)
                    results.append({"format": fmt, "source_mb": round(size_mb, 1), **r})
                    print(f"{fmt:10s} {r['rows']:>10,} rows  {stage:8s} {r['seconds']:6.1f} s  {r['rows_per_s']:>10,.0f} rows/s  peak {r['peak_rss_mb']:,.0f} MB", flush=True)
    previous = OUT / "ingest_validate.json"
    if previous.is_file():  # keep measurements of other sizes/formats from earlier runs, replace re-measured ones
        fresh = {(r["format"], r["rows"], r["stage"]) for r in results}
        kept = [r for r in json.loads(previous.read_text())["results"] if (r["format"], r["rows"], r["stage"]) not in fresh]
        results = sorted(kept + results, key=lambda r: (r["format"], r["rows"], r["stage"] != "ingest"))
    meta = {"machine": f"{platform.machine()}, {platform.processor() or ''} {__import__('os').cpu_count()} CPUs".strip(), "python": platform.python_version()}
    OUT.mkdir(exist_ok=True)
    (OUT / "ingest_validate.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    lines = [
        "# Ingest + validate throughput",
        "",
        f"Machine: {meta['machine']}. Each stage runs in its own process; peak = max RSS of that process.",
        "",
        "| format | source MB | rows | stage | seconds | rows/s | peak RSS MB |",
        "|---|---:|---:|---|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['format']} | {r['source_mb']} | {r['rows']:,} | {r['stage']} | {r['seconds']:.1f} | {r['rows_per_s']:,.0f} | {r['peak_rss_mb']:,.0f} |"
        )
    (OUT / "ingest_validate.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
