"""Fine-tuning the two-tower model: in-batch negatives plus the impression's logged non-clicks.

One example per click (label 1) in the training impressions (the most recent
`train.max_train_impressions` of them when > 0), with that impression's history. A step takes
`train.batch_size` examples — exactly the configured number, no hidden multiplier. Each example's
user vector is scored against

  * every positive item of the batch (in-batch negatives; another column holding the same item
    as the example's positive, or another click of its impression, is masked out, so no click of
    the user is a negative), and
  * up to `negatives_per_positive` of its impression's non-clicked candidates (seeded sample,
    without replacement),

and the loss is softmax cross-entropy with the example's own positive as the target. The loop
(optimizer, schedule, accumulation, precision, DDP, checkpoints, validation) is `llmrec.training.loop`;
the freshly initialised user tower learns at `USER_TOWER_LR_SCALE` (100) times `train.lr`, the
backbone's top layers (or its LoRA adapters) at `train.lr`. With gradient accumulation or several
processes, in-batch negatives come from the same micro-batch only. Larger
batches give more in-batch negatives (and cost more per step): with two-tower models the batch is
the main quality knob after the number of steps, so raise `train.batch_size` for this model type
when time allows (the cross-encoder default of 8 gives 7 in-batch + 4 logged negatives).

Every item text of a step (positives, logged negatives, the pooled history items) is encoded once,
in length-sorted chunks (little padding), with gradients through the top `trainable_layers` layers,
and shared by the user and item sides.
`TrainResult.pairs_per_second` counts training *examples* (clicks) per second for this model.

Histories are read from `impressions.history`: for sources without explicit histories, fill them
in first with `llmrec.data.context.with_context`, as the pipeline does for the cross-encoder.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from llmrec.config import ModelParams, TrainParams
from llmrec.data.contract import Dataset
from llmrec.errors import DataError
from llmrec.models.backbone import resolve_backbone
from llmrec.models.text import TextConfig, item_texts
from llmrec.models.two_tower import TwoTower, recent_known
from llmrec.training.checkpoint import checkpoint_digest
from llmrec.training.common import TrainResult, freeze_lower_layers, save_trained, start_training, train_result
from llmrec.training.loop import (
    LoopTask,
    run_loop,
    split_validation,
    validation_ndcg,
)
from llmrec.training.lora import add_lora, merge_lora

__all__ = ["build_click_examples", "split_validation", "train_two_tower"]

log = logging.getLogger(__name__)

# The user tower's parameters start from scratch (zero query and recency embeddings, a random
# "no history" vector) while the backbone is pretrained: at the backbone's learning rate they would barely move
# in a short run, and attention pooling would stay mean pooling.
USER_TOWER_LR_SCALE = 100.0
ENCODE_CHUNK = 64   # texts per encoder call within a step, sorted by length


def build_click_examples(train: Dataset, negatives: int, max_impressions: int, seed: int) -> pd.DataFrame:
    """One row per click: impression_id, history (str), positive, negatives (list, up to `negatives`),
    clicks (tuple of every clicked item of the impression)."""
    imps = train.impressions.sort_values("timestamp", kind="stable")
    if max_impressions:
        imps = imps.tail(max_impressions)
    histories = dict(zip(imps["impression_id"], imps["history"].fillna("").astype(str)))
    inter = train.interactions[train.interactions["impression_id"].isin(histories)]
    rng = np.random.default_rng(seed)
    rows = []
    for impression_id, group in inter.groupby("impression_id", sort=True):
        pos = group.loc[group["label"] == 1, "item_id"].astype(str).to_numpy()
        neg = group.loc[group["label"] == 0, "item_id"].astype(str).to_numpy()
        clicks = tuple(pos)
        for item in pos:
            picks = rng.choice(neg, size=min(negatives, len(neg)), replace=False) if len(neg) else []
            rows.append((impression_id, histories[impression_id], item, list(picks), clicks))
    if not rows:
        raise DataError(
            "no training impression has a click",
            fix="check the labels of the training data (are they all 0, or the unlabelled test split?)",
        )
    return pd.DataFrame(rows, columns=["impression_id", "history", "positive", "negatives", "clicks"])


def _length_chunks(model: TwoTower, unique: list[str]) -> tuple[list[dict[str, torch.Tensor]], torch.Tensor]:
    """The step's texts tokenized in chunks of similar length, and the index that restores their order."""
    order = sorted(range(len(unique)), key=lambda k: len(unique[k]))
    chunks = [model.tokenize([unique[k] for k in order[s : s + ENCODE_CHUNK]]) for s in range(0, len(order), ENCODE_CHUNK)]
    restore = torch.empty(len(order), dtype=torch.long)
    restore[torch.tensor(order, dtype=torch.long)] = torch.arange(len(order))
    return chunks, restore.to(model.device)


def _batch_tensors(model: TwoTower, batch: pd.DataFrame, recent: list[list[str]], texts: dict[str, str]):
    """Unique texts of the step and, as row indices into them: positives, logged negatives, histories, masks."""
    positives = batch["positive"].tolist()
    negatives = batch["negatives"].tolist()
    keys = [texts.get(i, i) for i in positives] + [texts.get(i, i) for n in negatives for i in n]
    keys += [texts[i] for h in recent for i in h]
    unique = list(dict.fromkeys(keys))  # each item text encoded once per step
    row = {t: k for k, t in enumerate(unique)}
    dev = model.device
    pos_rows = torch.tensor([row[texts.get(i, i)] for i in positives], dtype=torch.long, device=dev)
    width = max((len(n) for n in negatives), default=0)
    neg_rows = torch.zeros(len(batch), width, dtype=torch.long, device=dev)
    neg_mask = torch.zeros(len(batch), width, dtype=torch.bool, device=dev)
    for b, negs in enumerate(negatives):
        if negs:
            neg_rows[b, : len(negs)] = torch.tensor([row[texts.get(i, i)] for i in negs])
            neg_mask[b, : len(negs)] = True
    hist_index, hist_mask = model.history_index([[texts[i] for i in h] for h in recent], row)
    # column j of the in-batch block is a false negative for example i when it is i's own item or
    # another click of i's impression
    clicks = [set(texts.get(i, i) for i in c) for c in batch["clicks"]]
    pos_keys = [texts.get(i, i) for i in positives]
    same = torch.tensor([[j != i and pos_keys[j] in clicks[i] for j in range(len(batch))]
                         for i in range(len(batch))], dtype=torch.bool, device=dev)
    return unique, pos_rows, neg_rows, neg_mask, hist_index, hist_mask, same


def _validate(model: TwoTower, frame: pd.DataFrame, items: pd.DataFrame) -> float:
    """Mean nDCG@10 of the model on the validation frame (eval mode, no gradients; the mode is restored)."""
    was_training = model.net.training
    model.net.eval()
    with torch.no_grad():
        value = validation_ndcg(lambda f: model.score_frame(f, items), frame)
    model.net.train(was_training)
    return value


def train_two_tower(
    train: Dataset,
    model_params: ModelParams,
    train_params: TrainParams,
    out: str | Path,
    on_step: Callable[[int, float], None] | None = None,
    progress: bool = True,
    pooling: str | None = None,
) -> TrainResult:
    """Fine-tune a two-tower model on `train` and save it to `out` (see the module docstring); `pooling`
    overrides model.two_tower.pooling."""
    pooling = pooling or model_params.two_tower.pooling
    dist, device = start_training(train_params)
    text = TextConfig(max_history=model_params.two_tower.max_history)
    folder = resolve_backbone(model_params.backbone)
    model = TwoTower.from_backbone(folder, text, model_params.max_length, model_params.backbone, str(device), pooling)
    texts = item_texts(train.items, text)
    validate = None
    if train_params.validates:
        from llmrec.data.contract import candidate_frame

        train, held_out = split_validation(train)
        frame = candidate_frame(held_out)
        validate = lambda: _validate(model, frame, train.items)  # noqa: E731
        if dist.is_main:
            log.info("validating every %d steps on %d held-out impressions", train_params.eval_every, held_out.impressions["impression_id"].nunique())
    examples = build_click_examples(
        train, train_params.negatives_per_positive, train_params.max_train_impressions, train_params.seed
    )
    recent = [recent_known(h, texts, text.max_history) for h in examples["history"]]
    if dist.is_main:
        log.info("training a two-tower model on %d clicks from %d impressions", len(examples), examples["impression_id"].nunique())

    if train_params.lora.rank:
        model.replace_encoder(add_lora(model.encoder, train_params))
    else:
        freeze_lower_layers(model.encoder, train_params.trainable_layers)
    backbone = [p for p in model.encoder.parameters() if p.requires_grad]
    tower = list(model.user_tower.parameters())

    def loss(module: torch.nn.Module, idx: np.ndarray) -> torch.Tensor:
        unique, pos_rows, neg_rows, neg_mask, hist_index, hist_mask, same = _batch_tensors(
            model, examples.iloc[idx], [recent[i] for i in idx], texts
        )
        chunks, restore = _length_chunks(model, unique)
        vectors, users = module(chunks, restore, hist_index, hist_mask)
        users, vectors = users.float(), vectors.float()
        in_batch = (users @ vectors[pos_rows].T).masked_fill(same, float("-inf"))
        logged = (users.unsqueeze(1) * vectors[neg_rows]).sum(-1).masked_fill(~neg_mask, float("-inf"))
        logits = torch.cat([in_batch, logged], dim=1) / model.temperature
        target = torch.arange(len(idx), device=logits.device)  # the example's own positive: the diagonal
        return torch.nn.functional.cross_entropy(logits, target)

    task = LoopTask(
        module=model.net,
        param_groups=[{"params": backbone, "lr": train_params.lr}, {"params": tower, "lr": train_params.lr * USER_TOWER_LR_SCALE}],
        n_examples=len(examples),
        loss=loss,
        digest=checkpoint_digest(model_params, train_params, examples, pooling=pooling, model="two-tower"),
        lengths=None,  # grouping by text length would group by category (the prefix) and bias the in-batch negatives
        validate=validate,
        after_update=model.mark_changed,
        find_unused_parameters=True,  # the "no history" vector or the attention weights may get no gradient in a step
        desc="training two-tower",
    )
    result = run_loop(task, train_params, out, device, dist, on_step=on_step, progress=progress)
    if train_params.lora.rank:
        model.replace_encoder(merge_lora(model.encoder))
    save_trained(model, out, dist)
    return train_result(out, result, len(examples), device)
