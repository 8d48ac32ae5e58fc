"""Benchmark: latency (p50 / p95 / p99) and throughput of `llmrec serve` answering /recommend over loopback.

Two champions, each registered in a temporary sqlite MLflow store and served by a real `llmrec serve`
process (uvicorn, one worker, torch on `--threads` threads, default 2): a cross-encoder and a two-tower
model on the bundled all-MiniLM-L6-v2 backbone, untrained (latency does not depend on the weights),
over a 1,000-item catalogue from the synthetic generator's world.

Requests: a 20-item history and 100 candidates drawn from the catalogue (seeded), k = 10, sent by
1 and by 4 concurrent clients (httpx, keep-alive) after 3 warm-up requests. Extra two-tower cases: the
history with 5 raw texts (encoded per request, never cached) and no candidates (the whole catalogue
ranked). Latency is per request as the client sees it; throughput is requests answered per wall-clock
second. The server scores one request at a time per model (the tokenizer is not thread-safe), so with
4 clients latency is about 4x the service time and throughput stays flat. Writes
bench/results/serving_latency.{json,md}.

    .venv/bin/python bench/serving_latency.py [--threads 2] [--port 8650] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx
import numpy as np
from scoring_speed import catalogue  # bench/: the same synthetic catalogue as the scoring benchmark

from llmrec import tracking
from llmrec.config import load_params
from llmrec.models.backbone import resolve_backbone
from llmrec.models.cross_encoder import CrossEncoder
from llmrec.models.text import TextConfig
from llmrec.models.two_tower import DEFAULT_MAX_HISTORY, TwoTower

OUT = Path(__file__).parent / "results"
CATALOGUE = 1_000
HISTORY = 20
CANDIDATES = 100
RAW_TEXTS = 5
WARMUP = 3
# (model, case, concurrency, requests): bounded so the whole run takes a few minutes on 2 cores
CASES = [
    ("cross-encoder", "100 candidates", 1, 15),
    ("cross-encoder", "100 candidates", 4, 24),
    ("two-tower", "100 candidates", 1, 200),
    ("two-tower", "100 candidates", 4, 400),
    ("two-tower", f"100 candidates, {RAW_TEXTS} of the 20 history items as raw texts", 1, 100),
    ("two-tower", f"whole catalogue ({CATALOGUE:,} items), no candidates", 1, 100),
]


def free_port(start: int) -> int:
    for port in range(start, start + 50):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {start}-{start + 49}")


def register_champions(root: Path, items_path: Path, max_length: int, ce_history: int) -> dict[str, str]:
    """Untrained cross-encoder and two-tower on the default backbone, each the champion of its own registered model."""
    backbone = resolve_backbone("default")
    folders = {
        "cross-encoder": CrossEncoder.from_backbone(backbone, TextConfig(max_history=ce_history), max_length, "default", "cpu").save(root / "ce"),
        "two-tower": TwoTower.from_backbone(backbone, TextConfig(max_history=DEFAULT_MAX_HISTORY), max_length, "default", "cpu").save(root / "tt"),
    }
    names = {}
    for kind, folder in folders.items():
        name = f"bench-{kind}"
        version = tracking.register_model(folder, items_path, model_name=name, experiment="bench", params={}, metrics={}, tags={}, root=root).version
        tracking.promote(name, version, "benchmark", root=root)
        names[kind] = name
    return names


class ServerProcess:
    """`llmrec serve` for one registered model, as a separate process with `threads` torch threads."""

    def __init__(self, root: Path, model_name: str, port: int, threads: int) -> None:
        self.url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false",
               "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
        env.pop("MLFLOW_TRACKING_URI", None)  # the bench store in `root`
        self.log = root / f"{model_name}.log"
        command = [sys.executable, "-m", "llmrec.cli", "--params", str(root / "none.yaml"), "--set", f"tracking.model_name={model_name}",
                   "serve", "--port", str(port), "--poll-seconds", "3600"]
        self.proc = subprocess.Popen(command, cwd=root, env=env, stdout=self.log.open("w"), stderr=subprocess.STDOUT)

    def wait_ready(self, seconds: float = 300) -> float:
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return time.monotonic() - start
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"the server was not ready in {seconds} s:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def request_bodies(ids: list[str], titles: dict[str, str], n: int, case: str, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    bodies = []
    for _ in range(n):
        picked = [str(i) for i in rng.choice(ids, size=HISTORY + CANDIDATES, replace=False)]
        history: list = picked[:HISTORY]
        if "raw texts" in case:  # the newest ones, sent as texts of items the catalogue does not know
            history = history[: HISTORY - RAW_TEXTS] + [{"text": f"breaking: {titles[i]}"} for i in history[HISTORY - RAW_TEXTS :]]
        body = {"history": history, "k": 10}
        if "whole catalogue" not in case:
            body["candidates"] = picked[HISTORY:]
        bodies.append(body)
    return bodies


def run_load(url: str, bodies: list[dict], concurrency: int) -> dict:
    """Send `bodies` from `concurrency` clients; per-request latency (s), wall time, errors."""
    latencies: list[float] = []
    errors: list[str] = []
    versions: set[str] = set()
    queue = list(reversed(bodies))
    lock = threading.Lock()

    def client() -> None:
        with httpx.Client(base_url=url, timeout=120) as http:
            while True:
                with lock:
                    if not queue:
                        return
                    body = queue.pop()
                start = time.perf_counter()
                try:
                    r = http.post("/recommend", json=body)
                    elapsed = time.perf_counter() - start
                    with lock:
                        if r.status_code == 200:
                            latencies.append(elapsed)
                            versions.add(r.json()["model"]["version"])
                        else:
                            errors.append(f"{r.status_code}: {r.text[:200]}")
                except httpx.HTTPError as exc:
                    with lock:
                        errors.append(repr(exc))

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    ms = np.asarray(latencies) * 1000
    return {
        "requests": len(bodies), "ok": len(latencies), "errors": len(errors), "error_samples": errors[:3],
        "p50_ms": float(np.percentile(ms, 50)) if len(ms) else None,
        "p95_ms": float(np.percentile(ms, 95)) if len(ms) else None,
        "p99_ms": float(np.percentile(ms, 99)) if len(ms) else None,
        "mean_ms": float(ms.mean()) if len(ms) else None,
        "max_ms": float(ms.max()) if len(ms) else None,
        "wall_seconds": wall, "requests_per_second": len(latencies) / wall, "versions": sorted(versions),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the server process (default 2)")
    parser.add_argument("--port", type=int, default=8650, help="first loopback port to try")
    parser.add_argument("--quick", action="store_true", help="3 requests per case: checks the script, measures nothing")
    args = parser.parse_args()
    os.environ.pop("MLFLOW_TRACKING_URI", None)  # register into the temporary store, never into a configured server
    params = load_params(Path(__file__).parents[1] / "params.yaml")
    load_before = os.getloadavg()
    started = datetime.now(timezone.utc)
    results = []
    with tempfile.TemporaryDirectory(prefix="llmrec-bench-serve-") as tmp:
        root = Path(tmp)
        items = catalogue(CATALOGUE, params.synthetic.seed)
        items_path = root / "items.parquet"
        items.to_parquet(items_path)
        names = register_champions(root, items_path, params.model.max_length, params.model.cross_encoder.max_history)
        ids = items["item_id"].astype(str).tolist()
        titles = dict(zip(ids, items["title"].astype(str)))
        for kind, name in names.items():
            server = ServerProcess(root, name, free_port(args.port), args.threads)
            try:
                ready = server.wait_ready()
                print(f"{kind}: server ready in {ready:.1f} s (includes loading the version; the two-tower encodes the catalogue)")
                for case_kind, case, concurrency, n in CASES:
                    if case_kind != kind:
                        continue
                    n = 3 if args.quick else n
                    run_load(server.url, request_bodies(ids, titles, WARMUP, case, seed=1), 1)
                    row = {"model": kind, "case": case, "concurrency": concurrency, "server_ready_seconds": ready,
                           **run_load(server.url, request_bodies(ids, titles, n, case, seed=2), concurrency)}
                    results.append(row)
                    print(f"  {case}, {concurrency} client(s): p50 {row['p50_ms']:.1f} ms, p95 {row['p95_ms']:.1f} ms, "
                          f"p99 {row['p99_ms']:.1f} ms, {row['requests_per_second']:.2f} req/s, {row['errors']} errors")
            finally:
                server.stop()
    load_after = os.getloadavg()
    import torch

    result = {
        "date": started.isoformat(timespec="seconds"),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "torch": torch.__version__, "server_torch_threads": args.threads,
                    "load_average_before": load_before, "load_average_after": load_after,
                    "note": "shared machine: other jobs ran at the same time, so read the figures as noisy"},
        "backbone": "all-MiniLM-L6-v2 (bundled), untrained head / towers",
        "catalogue_items": CATALOGUE, "history_items": HISTORY, "candidates": CANDIDATES, "k": 10,
        "max_length": params.model.max_length, "cross_encoder_history_titles": params.model.cross_encoder.max_history,
        "two_tower_history_items": DEFAULT_MAX_HISTORY,
        "rows": results,
    }
    out = Path(tempfile.mkdtemp(prefix="serving-latency-quick-")) if args.quick else OUT
    out.mkdir(parents=True, exist_ok=True)
    (out / "serving_latency.json").write_text(json.dumps(result, indent=2))

    def fmt(value: float | None) -> str:
        return "-" if value is None else f"{value:,.1f}"

    md = [
        "| model | request | clients | requests | errors | p50 ms | p95 ms | p99 ms | req/s | candidates/s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        *(f"| {r['model']} | {r['case']} | {r['concurrency']} | {r['requests']} | {r['errors']} | {fmt(r['p50_ms'])} | "
          f"{fmt(r['p95_ms'])} | {fmt(r['p99_ms'])} | {r['requests_per_second']:.2f} | "
          f"{r['requests_per_second'] * (CATALOGUE - HISTORY if 'whole catalogue' in r['case'] else CANDIDATES):,.0f} |"
          for r in results),
        "",
        f"`llmrec serve` (uvicorn, 1 worker) on 127.0.0.1, one server process per model, torch on {args.threads} thread(s); "
        f"clients in the benchmark process (httpx, keep-alive). Each request: a {HISTORY}-item history and {CANDIDATES} "
        f"candidates from a {CATALOGUE:,}-item catalogue, k = 10; {WARMUP} warm-up requests per case. Backbone: the bundled "
        f"all-MiniLM-L6-v2 (untrained head / towers), max_length {params.model.max_length}; the cross-encoder reads the "
        f"{params.model.cross_encoder.max_history} newest history titles, the two-tower pools {DEFAULT_MAX_HISTORY} history item vectors.",
        "The server scores one request at a time per model, so with 4 clients a request waits for the others: latency grows "
        "about 4x and throughput stays that of one client. The two-tower's item vectors are encoded when the version loads "
        "(before it serves); raw history texts are encoded per request. p99 of 15-24 requests is close to the maximum.",
        f"Machine: {os.cpu_count()} cores, shared with other jobs (load average {load_before[0]:.1f} before / "
        f"{load_after[0]:.1f} after): the figures are noisy. {platform.platform()}, torch {torch.__version__}, "
        f"run {started:%Y-%m-%d %H:%M} UTC.",
    ]
    (out / "serving_latency.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
