"""Benchmark: training throughput of llmrec's real loops vs seed-style naive loops, both model types.

Same backbone (the bundled all-MiniLM-L6-v2), same data (bundled generator, `small` preset,
period 1, training part of the temporal split), same examples per step (`train.batch_size` click
groups / clicks). Every loop does its own tokenization inside the timed step.

  cross-encoder  naive: pad every (history, candidate) pair to 128 tokens, all layers trained, fp32,
                 random batches (the seed recipe).
                 llmrec: `llmrec.training.cross_encoder.train_cross_encoder` as `llmrec train` runs it (dynamic
                 padding, length-grouped batches, top `train.trainable_layers` layers).
  two-tower      naive: every text of every example (positive, logged negatives, history items)
                 encoded on its own row, padded to 128 tokens, all layers trained, fp32.
                 llmrec: `llmrec.training.two_tower.train_two_tower` (each distinct text of a step
                 encoded once, length-sorted chunks, top layers).

Each configuration runs in its own process (so its peak RSS is its own); the first 2 steps are
warm-up and not timed; the figure is examples (click groups / clicks) per second over the timed
steps. Writes bench/results/train_throughput{suffix}.{json,md}.

    .venv/bin/python bench/train_throughput.py [--steps 12] [--device cpu|cuda] [--suffix _gpu]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from llmrec.config import load_params

OUT = Path(__file__).parent / "results"
WARMUP = 2
CONFIGS = ["cross-encoder/naive", "cross-encoder/llmrec", "two-tower/naive", "two-tower/llmrec"]


def _data(params):
    from llmrec.data.context import with_context
    from llmrec.data.ingest import load_source
    from llmrec.data.split import temporal_split
    from llmrec.data.synthetic import generate

    tmp = tempfile.mkdtemp()
    generate(Path(tmp) / "syn", params.synthetic.size(), params.synthetic.seed, (1,))
    split = temporal_split(load_source(Path(tmp) / "syn").dataset, params.data.holdout_days)
    train = split.train
    recent = train.impressions.sort_values("timestamp", kind="stable").tail(params.train.max_train_impressions)
    train = train.restrict(recent["impression_id"])
    return with_context(train, split.train, params.train.negatives_per_positive, params.train.seed)


class StepClock:
    """on_step callback: times each step after the warm-up."""

    def __init__(self) -> None:
        self.marks: list[float] = []

    def __call__(self, step: int, loss: float) -> None:
        self.marks.append(time.perf_counter())

    def timed(self) -> list[float]:
        return list(np.diff(self.marks[WARMUP - 1 :]))


def _llmrec(kind: str, params, train, steps: int, device: str) -> dict:
    from llmrec.training.cross_encoder import train_cross_encoder
    from llmrec.training.two_tower import train_two_tower

    clock = StepClock()
    tp = params.train.model_copy(update={"max_steps": steps + WARMUP, "device": device, "checkpoint_every": 0, "warmup_ratio": 0.0})
    with tempfile.TemporaryDirectory() as out:
        fn = train_cross_encoder if kind == "cross-encoder" else train_two_tower
        result = fn(train, params.model, tp, out, on_step=clock, progress=False)
    times = clock.timed()
    return {"examples_per_second": params.train.batch_size * len(times) / sum(times),
            "median_step_seconds": float(np.median(times)), "steps": len(times), "precision": result.precision}


def _naive_cross_encoder(params, train, steps: int, device: str) -> dict:
    from llmrec.data.contract import history_list
    from llmrec.models.backbone import resolve_backbone
    from llmrec.models.cross_encoder import CrossEncoder
    from llmrec.models.text import TextConfig, item_texts, user_text
    from llmrec.training.cross_encoder import build_groups

    text = TextConfig(max_history=params.model.cross_encoder.max_history)
    model = CrossEncoder.from_backbone(resolve_backbone("default"), text, params.model.max_length, "default", device)
    texts = item_texts(train.items, text)
    groups = build_groups(train, params.train.negatives_per_positive, 0, params.train.seed)
    hist = dict(zip(train.impressions["impression_id"], train.impressions["history"]))
    order = np.random.default_rng(0).permutation(len(groups))
    opt = torch.optim.AdamW(model.model.parameters(), lr=params.train.lr)
    size, group = params.train.batch_size, params.train.negatives_per_positive + 1
    model.model.train()
    times = []
    for step in range(steps + WARMUP):
        start = time.perf_counter()
        users, items = [], []
        for i in order[step * size : (step + 1) * size]:
            imp, pos, negs = groups.iloc[i][["impression_id", "positive", "negatives"]]
            u = user_text(history_list(hist[imp]), texts, text)
            for item in [pos, *negs]:
                users.append(u)
                items.append(texts[item])
        enc = model.tokenizer(users, items, truncation=True, max_length=128, padding="max_length", return_tensors="pt")
        logits = model.forward({k: v.to(model.device) for k, v in enc.items()}).view(-1, group)
        loss = torch.nn.functional.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long, device=logits.device))
        loss.backward()
        opt.step()
        opt.zero_grad()
        if model.device.type == "cuda":
            torch.cuda.synchronize()
        if step >= WARMUP:
            times.append(time.perf_counter() - start)
    return {"examples_per_second": size * len(times) / sum(times), "median_step_seconds": float(np.median(times)), "steps": len(times)}


def _naive_two_tower(params, train, steps: int, device: str) -> dict:
    from llmrec.models.backbone import resolve_backbone
    from llmrec.models.text import TextConfig, item_texts
    from llmrec.models.two_tower import TwoTower, mean_pool, recent_known
    from llmrec.training.two_tower import build_click_examples

    text = TextConfig(max_history=params.model.two_tower.max_history)
    model = TwoTower.from_backbone(resolve_backbone("default"), text, params.model.max_length, "default", device)
    texts = item_texts(train.items, text)
    examples = build_click_examples(train, params.train.negatives_per_positive, 0, params.train.seed)
    order = np.random.default_rng(0).permutation(len(examples))
    opt = torch.optim.AdamW(model.net.parameters(), lr=params.train.lr)
    size = params.train.batch_size
    model.net.train()

    def encode(batch_texts: list[str]) -> torch.Tensor:
        enc = model.tokenizer(batch_texts, truncation=True, max_length=128, padding="max_length", return_tensors="pt")
        enc = {k: v.to(model.device) for k, v in enc.items()}
        return mean_pool(model.encoder(**enc).last_hidden_state, enc["attention_mask"])

    times = []
    for step in range(steps + WARMUP):
        start = time.perf_counter()
        rows = examples.iloc[order[step * size : (step + 1) * size]]
        users, positives, logged = [], [], []
        for hist, pos, negs in zip(rows["history"], rows["positive"], rows["negatives"]):
            recent = recent_known(hist, texts, text.max_history)
            users.append(encode([texts[i] for i in recent]).mean(0) if recent else model.user_tower.no_history)
            positives.append(texts.get(pos, pos))
            logged.append(encode([texts.get(n, n) for n in negs]))
        u = torch.nn.functional.normalize(torch.stack(users), dim=-1)
        p = encode(positives)
        logits = torch.cat([u @ p.T, torch.stack([(u[b] * logged[b]).sum(-1) for b in range(len(u))])], 1) / model.temperature
        loss = torch.nn.functional.cross_entropy(logits, torch.arange(len(u), device=logits.device))
        loss.backward()
        opt.step()
        opt.zero_grad()
        if model.device.type == "cuda":
            torch.cuda.synchronize()
        if step >= WARMUP:
            times.append(time.perf_counter() - start)
    return {"examples_per_second": size * len(times) / sum(times), "median_step_seconds": float(np.median(times)), "steps": len(times)}


def run_one(name: str, steps: int, device: str) -> dict:
    """One configuration, in this process; adds its peak RSS (and peak GPU memory on CUDA)."""
    import resource

    params = load_params(Path(__file__).parents[1] / "params.yaml")
    train = _data(params)
    kind, loop = name.split("/")
    if loop == "llmrec":
        result = _llmrec(kind, params, train, steps, device)
    else:
        result = (_naive_cross_encoder if kind == "cross-encoder" else _naive_two_tower)(params, train, steps, device)
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if torch.cuda.is_available() and device != "cpu":
        result["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=12, help="timed training steps per loop (after 2 warm-up steps)")
    parser.add_argument("--device", default="cpu", help="cpu | cuda (llmrec's loop then uses train.precision: auto = bf16)")
    parser.add_argument("--suffix", default="", help="results file suffix, e.g. _gpu")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.steps, args.device)))
        return
    params = load_params(Path(__file__).parents[1] / "params.yaml")
    results = {}
    for name in CONFIGS:
        done = subprocess.run([sys.executable, __file__, "--one", name, "--steps", str(args.steps), "--device", args.device],
                              capture_output=True, text=True, check=True)
        results[name] = json.loads(done.stdout.strip().splitlines()[-1])
        print(name, results[name], flush=True)
    speedup = {kind: results[f"{kind}/llmrec"]["examples_per_second"] / results[f"{kind}/naive"]["examples_per_second"]
               for kind in ("cross-encoder", "two-tower")}
    machine = {"cpu_threads": torch.get_num_threads(), "platform": platform.platform(), "torch": torch.__version__,
               "device": args.device, "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() and args.device != "cpu" else None}
    report = {"machine": machine, "date": time.strftime("%Y-%m-%d"), "batch_size": params.train.batch_size,
              "negatives_per_positive": params.train.negatives_per_positive, "trainable_layers": params.train.trainable_layers,
              "results": results, "speedup": speedup}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"train_throughput{args.suffix}.json").write_text(json.dumps(report, indent=2))
    md = ["| model | loop | examples/s | median s/step | peak RSS MiB |", "|---|---|---:|---:|---:|"]
    for name, r in results.items():
        kind, loop = name.split("/")
        what = "naive (pad 128, all layers, fp32)" if loop == "naive" else f"llmrec ({r.get('precision', 'fp32')}, top {params.train.trainable_layers} layers)"
        md.append(f"| {kind} | {what} | {r['examples_per_second']:.2f} | {r['median_step_seconds']:.2f} | {r['peak_rss_mib']:.0f} |")
    md += ["", f"Speed-up of llmrec's loop: cross-encoder **{speedup['cross-encoder']:.1f}x**, two-tower **{speedup['two-tower']:.1f}x** "
           f"({params.train.batch_size} click groups / clicks per step; {args.steps} timed steps after 2 warm-up steps).",
           f"Machine: {machine}, {report['date']}. Examples = click groups (cross-encoder, "
           f"{params.train.negatives_per_positive + 1} pairs each) or clicks (two-tower)."]
    (OUT / f"train_throughput{args.suffix}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
