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

and the loss is softmax cross-entropy with the example's own positive as the target. AdamW with
linear warm-up/decay and gradient clipping at 1.0; the freshly initialised user tower learns at
`USER_TOWER_LR_SCALE` (100) times `train.lr`, the backbone's top layers at `train.lr`. Larger
batches give more in-batch negatives (and cost more per step): with two-tower models the batch is
the main quality knob after the number of steps, so raise `train.batch_size` for this model type
when time allows (the cross-encoder default of 8 gives 7 in-batch + 4 logged negatives).

Every item text of a step (positives, logged negatives, the pooled history items) is encoded once,
with gradients through the top `trainable_layers` layers, and shared by the user and item sides.
`TrainResult.pairs_per_second` counts training *examples* (clicks) per second for this model.

Histories are read from `impressions.history`: for sources without explicit histories, fill them
in first with `llmrec.data.context.with_context`, as the pipeline does for the cross-encoder.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from llmrec.config import ModelParams, TrainParams
from llmrec.data.contract import Dataset
from llmrec.errors import DataError, ModelError
from llmrec.models.backbone import resolve_backbone
from llmrec.models.text import TextConfig, item_texts
from llmrec.models.two_tower import DEFAULT_MAX_HISTORY, TwoTower, recent_known
from llmrec.training import (
    TrainResult,
    _linear_schedule,
    checkpoint_digest,
    find_checkpoint,
    freeze_lower_layers,
    load_trainer_state,
    remove_checkpoint,
    rng_states,
    save_checkpoint,
    seed_everything,
    set_rng_states,
)

log = logging.getLogger(__name__)

# The user tower's parameters start from scratch (zero query and recency embeddings, a random
# "no history" vector) while the backbone is pretrained: at the backbone's learning rate (1e-4)
# 120 steps move the attention query by ~0.01 in norm, so attention pooling would stay mean pooling.
USER_TOWER_LR_SCALE = 100.0


def two_tower_max_history(model_params: ModelParams) -> int:
    """History items pooled by the user tower (`model.tower_history`; `model.max_history` is the
    cross-encoder's, which must fit history titles into one token window)."""
    return model_params.tower_history


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


VALIDATION_SHARE = 0.1      # train.eval_every: the most recent 10% of training impressions are held out ...
VALIDATION_MAX = 200        # ... at most this many of them (a small slice: it is scored every eval_every steps)


def split_validation(train: Dataset) -> tuple[Dataset, Dataset]:
    """(training part, validation part): the validation part is the most recent VALIDATION_SHARE of the
    impressions by time (at most VALIDATION_MAX, at least 1); both keep the whole item table."""
    imps = train.impressions.sort_values("timestamp", kind="stable")
    n = min(VALIDATION_MAX, max(1, int(len(imps) * VALIDATION_SHARE)))
    if len(imps) < 2:
        raise DataError("too few training impressions to hold out a validation slice", fix="set train.eval_every: 0")
    held = set(imps["impression_id"].iloc[-n:])

    def part(keep: bool) -> Dataset:
        return replace(
            train,
            impressions=train.impressions[train.impressions["impression_id"].isin(held) == keep],
            interactions=train.interactions[train.interactions["impression_id"].isin(held) == keep],
        )

    return part(False), part(True)


def _validate(model: TwoTower, frame: pd.DataFrame, items: pd.DataFrame) -> float:
    """Mean nDCG@10 of the model on the validation frame (impressions without a click and a non-click are skipped)."""
    from llmrec.evaluation.metrics import impression_metrics

    was_training = model.net.training
    model.net.eval()
    with torch.no_grad():
        scored = frame.assign(score=model.score_frame(frame, items))
    model.net.train(was_training)
    metrics = impression_metrics(scored, [10])
    return float(metrics["ndcg@10"].mean()) if len(metrics) else float("nan")


def train_two_tower(
    train: Dataset,
    model_params: ModelParams,
    train_params: TrainParams,
    out: str | Path,
    on_step: Callable[[int, float], None] | None = None,
    progress: bool = True,
    pooling: str = "mean",
) -> TrainResult:
    """Fine-tune a two-tower model on `train` and save it to `out` (see the module docstring)."""
    seed_everything(train_params.seed)
    text = TextConfig(max_history=two_tower_max_history(model_params))
    folder = resolve_backbone(model_params.backbone)
    model = TwoTower.from_backbone(folder, text, model_params.max_length, model_params.backbone, train_params.device, pooling)
    texts = item_texts(train.items, text)
    validation_frame, curve, best, best_step, best_state, bad_evals = None, [], -math.inf, 0, None, 0
    if train_params.eval_every:
        from llmrec.evaluation.protocols import candidate_frame

        train, held_out = split_validation(train)
        validation_frame = candidate_frame(held_out)
        log.info("validating every %d steps on %d held-out impressions", train_params.eval_every, held_out.impressions["impression_id"].nunique())
    examples = build_click_examples(
        train, train_params.negatives_per_positive, train_params.max_train_impressions, train_params.seed
    )
    recent = [recent_known(h, texts, text.max_history) for h in examples["history"]]
    log.info("training a two-tower model on %d clicks from %d impressions", len(examples), examples["impression_id"].nunique())

    freeze_lower_layers(model.encoder, train_params.trainable_layers)
    backbone = [p for p in model.encoder.parameters() if p.requires_grad]
    tower = list(model.user_tower.parameters())
    trainable = backbone + tower
    optimizer = torch.optim.AdamW(
        [{"params": backbone, "lr": train_params.lr}, {"params": tower, "lr": train_params.lr * USER_TOWER_LR_SCALE}],
        lr=train_params.lr,
        weight_decay=train_params.weight_decay,
    )
    steps = train_params.max_steps
    scheduler = _linear_schedule(optimizer, int(steps * train_params.warmup_ratio), steps)
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16) if model.device.type == "cuda" else contextlib.nullcontext()
    )
    rng = np.random.default_rng(train_params.seed)
    order = rng.permutation(len(examples))
    size = train_params.batch_size
    cursor, losses, seen, encoded, first = 0, [], 0, 0, 0
    digest = checkpoint_digest(model_params, train_params, examples, pooling=pooling, model="two-tower")
    resume_from = find_checkpoint(out, digest, train_params.resume) if train_params.checkpoint_every else None
    if resume_from is not None:
        state = load_trainer_state(resume_from)
        model.load_weights(resume_from / "model")
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        rng.bit_generator.state = state["data_rng"]
        order, cursor, first = state["order"].numpy(), int(state["cursor"]), int(state["step"])
        losses, seen, encoded = list(state["losses"]), int(state["seen"]), int(state["encoded"])
        set_rng_states(state["rng"])
        curve, best, bad_evals = list(state["validation"]), float(state["best"]), int(state["bad_evals"])
        best_step = int(state["best_step"])
        best_state = state["best_state"]
        log.info("resuming from step %d (checkpoint %s)", first, resume_from)
    seen_before, encoded_before = seen, encoded
    model.net.train()
    started = time.perf_counter()
    bar = tqdm(range(first, steps), desc="training two-tower", unit="step", disable=not progress, initial=first, total=steps)
    for step in bar:
        if cursor + size > len(order):
            order, cursor = rng.permutation(len(examples)), 0
        idx = order[cursor : cursor + size]
        cursor += size
        batch = examples.iloc[idx]
        unique, pos_rows, neg_rows, neg_mask, hist_index, hist_mask, same = _batch_tensors(
            model, batch, [recent[i] for i in idx], texts
        )
        with autocast:
            vectors = model.embed_texts(unique)
        users = model.user_tower(vectors[hist_index], hist_mask)
        in_batch = (users @ vectors[pos_rows].T).masked_fill(same, float("-inf"))
        logged = (users.unsqueeze(1) * vectors[neg_rows]).sum(-1).masked_fill(~neg_mask, float("-inf"))
        logits = torch.cat([in_batch, logged], dim=1).float() / model.temperature
        target = torch.arange(len(idx), device=logits.device)  # the example's own positive: the diagonal
        loss = torch.nn.functional.cross_entropy(logits, target)
        if not math.isfinite(loss.item()):
            raise ModelError(f"training diverged at step {step + 1} (loss is not finite)", fix="lower train.lr")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        model.mark_changed()
        seen += len(idx)
        encoded += len(unique)
        losses.append(loss.item())
        elapsed = time.perf_counter() - started
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}", ex_s=f"{(seen - seen_before) / elapsed:.1f}",
                        items_s=f"{(encoded - encoded_before) / elapsed:.0f}")
        stop = False
        if train_params.eval_every and ((step + 1) % train_params.eval_every == 0 or step + 1 == steps):
            ndcg = _validate(model, validation_frame, train.items)
            curve.append({"step": step + 1, "ndcg@10": ndcg})
            if ndcg > best:
                best, best_step, bad_evals = ndcg, step + 1, 0
                best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.net.state_dict().items()}
            else:
                bad_evals += 1
            log.info("step %d: validation nDCG@10 %.4f (best %.4f)", step + 1, ndcg, best)
            if train_params.early_stopping_patience and bad_evals >= train_params.early_stopping_patience:
                log.info("early stopping at step %d: no improvement in %d validations", step + 1, bad_evals)
                stop = True
        if train_params.checkpoint_every and (step + 1) % train_params.checkpoint_every == 0 and step + 1 < steps and not stop:
            save_checkpoint(out, step + 1, digest, model.save, {
                "step": step + 1,
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "data_rng": rng.bit_generator.state,
                "order": torch.from_numpy(np.asarray(order, dtype=np.int64)),
                "cursor": cursor,
                "losses": losses,
                "seen": seen,
                "encoded": encoded,
                "rng": rng_states(),
                "validation": curve,
                "best": best,
                "best_step": best_step,
                "best_state": best_state,
                "bad_evals": bad_evals,
            })
        if on_step is not None:
            on_step(step, losses[-1])
        if stop:
            break
    seconds = time.perf_counter() - started
    final = float(np.mean(losses[-20:]))
    if not math.isfinite(final):
        raise ModelError("training diverged (loss is not finite)", fix="lower train.lr")
    model.net.eval()
    if best_state is not None:  # eval_every: the weights of the best validation, not the last step's
        model.net.load_state_dict(best_state)
        model.mark_changed()
        log.info("keeping the weights of step %d (validation nDCG@10 %.4f)", best_step, best)
    model.save(out)
    remove_checkpoint(out)
    return TrainResult(
        model_dir=str(out),
        steps=len(losses),
        examples=len(examples),
        seconds=round(seconds, 2),
        pairs_per_second=round((seen - seen_before) / max(seconds, 1e-9), 2),
        final_loss=final,
        losses=losses,
        device=str(model.device),
        validation=curve,
    )
