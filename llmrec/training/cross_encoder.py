"""Fine-tuning: listwise training of the cross-encoder on logged impressions.

Each example is one clicked candidate with `negatives_per_positive` non-clicked candidates
of the same impression (MIND's "npratio" recipe); the loss is softmax cross-entropy over the
group, so the model learns to put the click first.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from llmrec.config import ModelParams, TrainParams
from llmrec.data.contract import Dataset, history_list
from llmrec.errors import DataError
from llmrec.models.backbone import resolve_backbone
from llmrec.models.cross_encoder import CrossEncoder
from llmrec.models.text import TextConfig, item_texts, user_text
from llmrec.training.checkpoint import checkpoint_digest
from llmrec.training.common import (
    TrainResult,
    freeze_lower_layers,
    save_trained,
    start_training,
    token_lengths,
    train_result,
)
from llmrec.training.loop import (
    LoopTask,
    run_loop,
    split_validation,
    validation_ndcg,
)
from llmrec.training.lora import add_lora, merge_lora

log = logging.getLogger(__name__)


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


def _pair_lengths(tokenizer: object, users: list[str], candidates: list[list[str]], max_length: int) -> np.ndarray:
    """Per click group: the padded length of its longest (user, candidate) pair."""
    lengths = token_lengths(tokenizer, users + [c for group in candidates for c in group])
    return np.array(
        [min(max_length, lengths[u] + max(lengths[c] for c in group) + 3) for u, group in zip(users, candidates)],
        dtype=np.int64,
    )


def train_cross_encoder(
    train: Dataset,
    model_params: ModelParams,
    train_params: TrainParams,
    out: str | Path,
    on_step: Callable[[int, float], None] | None = None,
    progress: bool = True,
) -> TrainResult:
    """Fine-tune a cross-encoder on `train` and save it to `out` (the main process saves)."""
    dist, device = start_training(train_params)
    text = TextConfig(max_history=model_params.cross_encoder.max_history, with_text=False)  # the pair shares its tokens with the history
    folder = resolve_backbone(model_params.backbone)
    model = CrossEncoder.from_backbone(folder, text, model_params.max_length, model_params.backbone, str(device))
    validate = None
    if train_params.validates:
        from llmrec.data.contract import candidate_frame

        train, held_out = split_validation(train)
        frame = candidate_frame(held_out)
        scorer = model.scorer(train.items, 64, False)
        validate = lambda: validation_ndcg(scorer, frame)  # noqa: E731
    texts = item_texts(train.items, text)
    groups = build_groups(train, train_params.negatives_per_positive, train_params.max_train_impressions, train_params.seed)
    users, candidates = _group_texts(groups, train, texts, text)
    if dist.is_main:
        log.info("training on %d click groups from %d impressions", len(groups), groups["impression_id"].nunique())

    if train_params.lora.rank:
        model.model = add_lora(model.model, train_params, keep_trainable=("classifier", "pooler"))
    else:
        freeze_lower_layers(model.model, train_params.trainable_layers)
    group_size = train_params.negatives_per_positive + 1

    def loss(module: torch.nn.Module, idx: np.ndarray) -> torch.Tensor:
        batch = model.encode([users[i] for i in idx for _ in range(group_size)], [c for i in idx for c in candidates[i]])
        logits = module(**batch).logits.squeeze(-1).view(len(idx), group_size)
        target = torch.zeros(len(idx), dtype=torch.long, device=logits.device)  # the click is column 0
        return torch.nn.functional.cross_entropy(logits.float(), target)

    task = LoopTask(
        module=model.model,
        param_groups=[{"params": [p for p in model.model.parameters() if p.requires_grad], "lr": train_params.lr}],
        n_examples=len(groups),
        loss=loss,
        digest=checkpoint_digest(model_params, train_params, groups, model="cross-encoder"),
        lengths=_pair_lengths(model.tokenizer, users, candidates, model_params.max_length) if model_params.cross_encoder.group_by_length else None,
        validate=validate,
        pairs_per_example=group_size,
        desc="training cross-encoder",
    )
    result = run_loop(task, train_params, out, device, dist, on_step=on_step, progress=progress)
    model.model = merge_lora(model.model)
    save_trained(model, out, dist)
    return train_result(out, result, len(groups), device)
