"""Fine-tuning: listwise training of the cross-encoder on logged impressions.

Each example is one clicked candidate with `negatives_per_positive` non-clicked candidates
of the same impression (MIND's "npratio" recipe); the loss is softmax cross-entropy over the
group, so the model learns to put the click first.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from llmrec.config import ModelParams, TrainParams
from llmrec.data.contract import Dataset, history_list
from llmrec.errors import DataError, ModelError
from llmrec.models.backbone import resolve_backbone
from llmrec.models.cross_encoder import CrossEncoder
from llmrec.models.text import TextConfig, item_texts, user_text

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    model_dir: str
    steps: int
    examples: int
    seconds: float
    pairs_per_second: float
    final_loss: float
    losses: list[float] = field(default_factory=list)
    device: str = "cpu"

    def to_dict(self) -> dict:
        return asdict(self)


def build_groups(train: Dataset, negatives: int, max_impressions: int, seed: int) -> pd.DataFrame:
    """One row per click: impression_id, positive item, list of sampled negative items."""
    imps = train.impressions.sort_values("timestamp", kind="stable")
    if max_impressions:
        imps = imps.tail(max_impressions)
    inter = train.interactions[train.interactions["impression_id"].isin(imps["impression_id"])]
    rng = np.random.default_rng(seed)
    rows = []
    for impression_id, group in inter.groupby("impression_id", sort=True):
        pos = group.loc[group["label"] == 1, "item_id"].to_numpy()
        neg = group.loc[group["label"] == 0, "item_id"].to_numpy()
        if len(pos) == 0 or len(neg) == 0:
            continue
        for item in pos:
            picks = rng.choice(neg, size=negatives, replace=len(neg) < negatives)
            rows.append((impression_id, item, list(picks)))
    if not rows:
        raise DataError(
            "no training impression has both a click and a non-click",
            fix="check the labels of the training data (are they all 0, all 1, or the unlabelled test split?)",
        )
    return pd.DataFrame(rows, columns=["impression_id", "positive", "negatives"])


def _group_texts(groups: pd.DataFrame, train: Dataset, texts: dict[str, str], config: TextConfig) -> tuple[list[str], list[list[str]]]:
    histories = dict(zip(train.impressions["impression_id"], train.impressions["history"]))
    users = [user_text(history_list(histories[i]), texts, config) for i in groups["impression_id"]]
    candidates = [[texts.get(p, p)] + [texts.get(n, n) for n in negs] for p, negs in zip(groups["positive"], groups["negatives"])]
    return users, candidates


def freeze_lower_layers(model: torch.nn.Module, trainable_layers: int) -> None:
    """Train only the top `trainable_layers` transformer layers and the head (0 = train everything).

    Fine-tuning the top layers of a pretrained news encoder is about as good as fine-tuning all
    of them (PLM-NR, Wu et al. 2021) and makes each step much cheaper on CPU.
    """
    if trainable_layers <= 0:
        return
    base = getattr(model, "base_model", model)
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    if layers is None:
        log.warning("cannot find encoder layers in %s; training all of it", type(model).__name__)
        return
    for p in base.embeddings.parameters():
        p.requires_grad_(False)
    for layer in list(layers)[: max(0, len(layers) - trainable_layers)]:
        for p in layer.parameters():
            p.requires_grad_(False)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def _linear_schedule(optimizer: torch.optim.Optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train_cross_encoder(
    train: Dataset,
    model_params: ModelParams,
    train_params: TrainParams,
    out: str | Path,
    on_step: Callable[[int, float], None] | None = None,
    progress: bool = True,
) -> TrainResult:
    """Fine-tune a cross-encoder on `train` and save it to `out`."""
    seed_everything(train_params.seed)
    text = TextConfig(max_history=model_params.max_history)
    folder = resolve_backbone(model_params.backbone)
    model = CrossEncoder.from_backbone(folder, text, model_params.max_length, model_params.backbone, train_params.device)
    texts = item_texts(train.items, text)
    groups = build_groups(train, train_params.negatives_per_positive, train_params.max_train_impressions, train_params.seed)
    users, candidates = _group_texts(groups, train, texts, text)
    log.info("training on %d click groups from %d impressions", len(groups), groups["impression_id"].nunique())

    freeze_lower_layers(model.model, train_params.trainable_layers)
    trainable = [p for p in model.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=train_params.lr, weight_decay=train_params.weight_decay)
    steps = train_params.max_steps
    scheduler = _linear_schedule(optimizer, int(steps * train_params.warmup_ratio), steps)
    rng = np.random.default_rng(train_params.seed)
    order = rng.permutation(len(groups))
    cursor, losses, pairs = 0, [], 0
    group_size = train_params.negatives_per_positive + 1
    model.model.train()
    started = time.perf_counter()
    bar = tqdm(range(steps), desc="training", unit="step", disable=not progress)
    for step in bar:
        if cursor + train_params.batch_size > len(order):
            order, cursor = rng.permutation(len(groups)), 0
        idx = order[cursor : cursor + train_params.batch_size]
        cursor += train_params.batch_size
        batch_users = [users[i] for i in idx for _ in range(group_size)]
        batch_items = [c for i in idx for c in candidates[i]]
        logits = model.forward(model.encode(batch_users, batch_items)).view(len(idx), group_size)
        target = torch.zeros(len(idx), dtype=torch.long, device=logits.device)  # the click is column 0
        loss = torch.nn.functional.cross_entropy(logits.float(), target)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        pairs += len(batch_items)
        losses.append(loss.item())
        rate = pairs / (time.perf_counter() - started)
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}", pairs_s=f"{rate:.0f}")
        if on_step is not None:
            on_step(step, losses[-1])
    seconds = time.perf_counter() - started
    final = float(np.mean(losses[-20:]))
    if not math.isfinite(final):
        raise ModelError("training diverged (loss is not finite)", fix="lower train.lr")
    model.save(out)
    return TrainResult(
        model_dir=str(out),
        steps=steps,
        examples=len(groups),
        seconds=round(seconds, 2),
        pairs_per_second=round(pairs / seconds, 2),
        final_loss=final,
        losses=losses,
        device=str(model.device),
    )
