"""Benchmark: training pairs/s of llmrec's loop vs a seed-style naive loop, and scoring pairs/s.

Same backbone (the bundled MiniLM), same data (bundled generator, `small` preset, period 1), same
batches of click groups. The naive loop pads every pair to a fixed length and fine-tunes every
layer (the seed recipe); llmrec's pads each batch to its longest pair and fine-tunes the top layers.
Writes bench/results/train_throughput.{json,md}.

    .venv/bin/python bench/train_throughput.py [--steps 12]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from llmrec.config import SyntheticSize, load_params
from llmrec.data.contract import history_list
from llmrec.data.ingest import load_source
from llmrec.data.split import temporal_split
from llmrec.data.synthetic import generate
from llmrec.models.backbone import resolve_backbone
from llmrec.models.cross_encoder import CrossEncoder
from llmrec.models.text import TextConfig, item_texts, user_text
from llmrec.training import build_groups, freeze_lower_layers

OUT = Path(__file__).parent / "results"


def batches(split, params, n_steps):
    text = TextConfig(max_history=params.model.max_history)
    texts = item_texts(split.train.items, text)
    groups = build_groups(split.train, params.train.negatives_per_positive, 0, params.train.seed).head(n_steps * params.train.batch_size)
    hist = dict(zip(split.train.impressions["impression_id"], split.train.impressions["history"]))
    for start in range(0, len(groups), params.train.batch_size):
        g = groups.iloc[start : start + params.train.batch_size]
        users, items = [], []
        for imp, pos, negs in zip(g["impression_id"], g["positive"], g["negatives"]):
            u = user_text(history_list(hist[imp]), texts, text)
            for item in [pos, *negs]:
                users.append(u)
                items.append(texts[item])
        yield users, items


def run_loop(split, params, n_steps: int, naive: bool) -> dict:
    torch.manual_seed(0)
    text = TextConfig(max_history=params.model.max_history)
    model = CrossEncoder.from_backbone(resolve_backbone("default"), text, params.model.max_length, "default", "cpu")
    if not naive:
        freeze_lower_layers(model.model, params.train.trainable_layers)
    trainable = [p for p in model.model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=params.train.lr)
    group = params.train.negatives_per_positive + 1
    model.model.train()
    times, pairs, tokens = [], 0, 0
    for step, (users, items) in enumerate(batches(split, params, n_steps + 2)):
        if naive:
            enc = model.tokenizer(users, items, truncation=True, max_length=128, padding="max_length", return_tensors="pt")
        else:
            enc = model.encode(users, items)
        start = time.perf_counter()
        logits = model.forward(enc).view(-1, group)
        loss = torch.nn.functional.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long))
        loss.backward()
        opt.step()
        opt.zero_grad()
        if step >= 2:  # the first two steps warm up
            times.append(time.perf_counter() - start)
            pairs += len(users)
            tokens += int(enc["input_ids"].numel())
    return {"pairs_per_second": pairs / sum(times), "median_step_seconds": float(np.median(times)),
            "tokens_per_pair": tokens / pairs, "steps": len(times)}


def scoring(split, params, n_pairs: int = 2000) -> dict:
    text = TextConfig(max_history=params.model.max_history)
    model = CrossEncoder.from_backbone(resolve_backbone("default"), text, params.model.max_length, "default", "cpu")
    users, items = [], []
    for u, i in batches(split, params, 1000):
        users += u
        items += i
        if len(users) >= n_pairs:
            break
    model.score(users[:64], items[:64])
    start = time.perf_counter()
    model.score(users[:n_pairs], items[:n_pairs], batch_size=params.eval.batch_size)
    return {"pairs_per_second": n_pairs / (time.perf_counter() - start), "pairs": n_pairs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=12, help="timed training steps per loop")
    args = parser.parse_args()
    params = load_params(Path(__file__).parents[1] / "params.yaml")
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp) / "syn", params.synthetic.size(), params.synthetic.seed, (1,))
        split = temporal_split(load_source(Path(tmp) / "syn").dataset, params.data.holdout_days)
    naive = run_loop(split, params, args.steps, naive=True)
    ours = run_loop(split, params, args.steps, naive=False)
    result = {
        "machine": {"cpu_threads": torch.get_num_threads(), "platform": platform.platform(), "torch": torch.__version__},
        "batch": {"groups": params.train.batch_size, "pairs_per_group": params.train.negatives_per_positive + 1},
        "naive_loop": naive,
        "llmrec_loop": ours,
        "training_speedup": ours["pairs_per_second"] / naive["pairs_per_second"],
        "cross_encoder_scoring": scoring(split, params),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "train_throughput.json").write_text(json.dumps(result, indent=2))
    md = [
        "| loop | pairs/s | median s/step | tokens/pair |",
        "|---|---:|---:|---:|",
        f"| naive (pad to 128, all layers, fp32) | {naive['pairs_per_second']:.1f} | {naive['median_step_seconds']:.2f} | {naive['tokens_per_pair']:.0f} |",
        f"| llmrec (dynamic padding, top {params.train.trainable_layers} layers) | {ours['pairs_per_second']:.1f} | {ours['median_step_seconds']:.2f} | {ours['tokens_per_pair']:.0f} |",
        "",
        f"Training speed-up: **{result['training_speedup']:.1f}x**. Cross-encoder scoring: "
        f"{result['cross_encoder_scoring']['pairs_per_second']:.0f} pairs/s. Machine: {result['machine']}.",
    ]
    (OUT / "train_throughput.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
