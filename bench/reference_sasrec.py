"""Benchmark: an independent SASRec under `llmrec benchmark`'s protocol, the yardstick for llmrec's own SASRec.

Kang & McAuley's layout (2 pre-norm blocks x 64 dims, 1 head, ReLU feed-forward of 64, learned positions,
item embeddings shared by input and output, Xavier-normal start, inputs times sqrt(dim)), trained with
full-softmax cross-entropy on each user's last `--sequence-length` training items (Adam, lr 1e-3, batch 128,
dropout 0.2) until the validation items' full-ranking nDCG@10 has not improved for 20 epochs; the best
epoch's weights are scored on the test items with `llmrec.evaluation.benchmark` (same split, negatives and
metrics as `llmrec benchmark`). Two switches reproduce llmrec's earlier choices on it:
  --normalised-user   score = cos-like normalize(state) . item / 0.05 (llmrec's user vector and temperature)
  --unit-norm-start   item rows drawn N(0, 1/dim) and fed as they are (llmrec's start before `sasrec_init`)
Writes bench/results/reference_sasrec[_<tag>].{json,md} (commit, date, machine, load average).

    .venv/bin/python bench/reference_sasrec.py DATA_DIR [--normalised-user] [--unit-norm-start] [--max-epochs 200]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from llmrec.config import Params
from llmrec.data.ingest import load_source
from llmrec.evaluation.benchmark import VARIANTS, StandardProtocol, per_user_metrics, standard_split

ROOT = Path(__file__).resolve().parents[1]
DIM, BLOCKS, HEADS, DROPOUT, LR, BATCH, PATIENCE, TEMPERATURE = 64, 2, 1, 0.2, 1e-3, 128, 20, 0.05


class SASRec(nn.Module):
    def __init__(self, n_items: int, length: int, normalised_user: bool, unit_norm_start: bool) -> None:
        super().__init__()
        self.normalised_user = normalised_user
        self.input_scale = 1.0 if unit_norm_start else DIM ** 0.5
        self.item = nn.Embedding(n_items + 1, DIM, padding_idx=0)
        self.position = nn.Embedding(length, DIM)
        self.dropout = nn.Dropout(DROPOUT)
        block = nn.TransformerEncoderLayer(DIM, HEADS, DIM, DROPOUT, activation="relu", batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(block, BLOCKS, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(DIM)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_normal_(p)
        with torch.no_grad():
            if unit_norm_start:
                self.item.weight.normal_(0.0, DIM ** -0.5)
            self.item.weight[0].zero_()
        self.register_buffer("causal", torch.triu(torch.full((length, length), float("-inf")), 1))

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        """Left-padded item rows (B, L), 0 = padding -> states (B, L, dim)."""
        keep = (windows > 0).unsqueeze(-1).float()
        x = self.dropout((self.item(windows) * self.input_scale + self.position.weight) * keep)
        return self.norm(self.blocks(x, mask=self.causal))

    def logits(self, states: torch.Tensor) -> torch.Tensor:
        if self.normalised_user:
            return nn.functional.normalize(states, dim=-1) @ self.item.weight[1:].T / TEMPERATURE
        return states @ self.item.weight[1:].T


def window(rows: np.ndarray, length: int) -> np.ndarray:
    out = np.zeros(length, dtype=np.int64)
    if len(rows):
        out[-min(length, len(rows)):] = rows[-length:]
    return out


def run(data: str, length: int, max_epochs: int, normalised_user: bool, unit_norm_start: bool, seed: int) -> dict:
    torch.manual_seed(seed)
    split = standard_split(load_source(data, Params().data).dataset, StandardProtocol())
    train = split.histories["train-only"]
    vocab = {item: k + 1 for k, item in enumerate(sorted({i for s in train for i in s}))}
    rows = [np.array([vocab[i] for i in s], dtype=np.int64) for s in train]
    inputs = torch.from_numpy(np.stack([window(r[:-1], length) for r in rows]))
    targets = torch.from_numpy(np.stack([window(r[1:], length) for r in rows]))
    valid = np.array([vocab.get(h[-1], 0) for h in split.histories["train+val"]])
    model = SASRec(len(vocab), length, normalised_user, unit_norm_start)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR, betas=(0.9, 0.98))

    def scores(histories: list[list[str]], users: np.ndarray) -> np.ndarray:
        model.eval()
        with torch.no_grad():
            w = np.stack([window(np.array([vocab[i] for i in histories[u] if i in vocab], dtype=np.int64), length) for u in users])
            return model.logits(model(torch.from_numpy(w))[:, -1]).numpy()

    def validation_ndcg() -> float:
        """Full-ranking nDCG@10 of the validation items (train histories; earlier consumptions excluded)."""
        gains = []
        for start in range(0, len(valid), 256):
            users = np.arange(start, min(start + 256, len(valid)))
            s = scores(train, users)
            for k, u in enumerate(users):
                if valid[u]:
                    right = valid[u] - 1
                    seen = [r - 1 for r in rows[u] if r - 1 != right]
                    s[k, seen] = -np.inf
                    rank = int((s[k] > s[k, right]).sum())
                    gains.append(1 / np.log2(rank + 2) if rank < 10 else 0.0)
        return float(np.mean(gains))

    curve, best, best_epoch, best_state, started = [], -1.0, 0, None, time.perf_counter()
    for epoch in range(1, max_epochs + 1):
        model.train()
        order, total = torch.randperm(len(inputs)), 0.0
        for start in range(0, len(order), BATCH):
            batch = order[start:start + BATCH]
            states, t = model(inputs[batch]), targets[batch]
            loss = nn.functional.cross_entropy(model.logits(states[t > 0]), t[t > 0] - 1)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
        ndcg = validation_ndcg()
        curve.append({"epoch": epoch, "loss": round(total / -(-len(order) // BATCH), 4), "validation_ndcg@10": round(ndcg, 4)})
        print(json.dumps(curve[-1]), flush=True)
        if ndcg > best:
            best, best_epoch, best_state = ndcg, epoch, {k: v.clone() for k, v in model.state_dict().items()}
        elif epoch - best_epoch >= PATIENCE:
            break
    model.load_state_dict(best_state)
    catalogue_rows = np.array([vocab.get(i, 0) for i in split.catalogue])
    known = catalogue_rows > 0
    result = {"epochs": epoch, "best_epoch": best_epoch,
              "seconds": round(time.perf_counter() - started, 1), "tables": {}, "curve": curve}
    for variant in VARIANTS:
        def score(users: np.ndarray, variant: str = variant) -> np.ndarray:
            out = np.full((len(users), len(split.catalogue)), -1e9)  # items it never saw: last place
            out[:, known] = scores(split.histories[variant], users)[:, catalogue_rows[known] - 1]
            return out
        for protocol, frame in per_user_metrics(split, score, (1, 5, 10, 20)).items():
            result["tables"][f"{variant}, {protocol}"] = {m: round(float(frame[m].mean()), 4) for m in ("ndcg@10", "hr@10", "hr@20", "mrr")}
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data")
    ap.add_argument("--sequence-length", type=int, default=200)
    ap.add_argument("--max-epochs", type=int, default=200)
    ap.add_argument("--normalised-user", action="store_true")
    ap.add_argument("--unit-norm-start", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    result = run(args.data, args.sequence_length, args.max_epochs, args.normalised_user, args.unit_norm_start, args.seed)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    record = {"commit": commit, "date": time.strftime("%Y-%m-%d %H:%M"), "data": args.data,
              "machine": f"{platform.platform()}, {os.cpu_count()} CPUs, torch {torch.__version__} ({args.threads} threads)",
              "load_average": [round(x, 2) for x in os.getloadavg()],
              "settings": {"sequence_length": args.sequence_length, "normalised_user": args.normalised_user,
                           "unit_norm_start": args.unit_norm_start, "max_epochs": args.max_epochs, "seed": args.seed}, **result}
    tag = "".join(["_normalised" if args.normalised_user else "", "_unitstart" if args.unit_norm_start else ""])
    out = ROOT / "bench" / "results" / f"reference_sasrec{tag}"
    out.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    lines = [f"# Reference SASRec{tag.replace('_', ' ')} under `llmrec benchmark`'s protocol", "",
             f"Data {args.data}; settings {record['settings']}; {result['epochs']} epochs, best at {result['best_epoch']}, "
             f"{result['seconds']:.0f} s.", "", "| histories, ranking | ndcg@10 | hr@10 | hr@20 | mrr |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {k} | " + " | ".join(f"{v[m]:.4f}" for m in ("ndcg@10", "hr@10", "hr@20", "mrr")) + " |" for k, v in result["tables"].items()]
    lines += ["", f"Commit {commit}, {record['date']}, {record['machine']}, load average {record['load_average']}."]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
