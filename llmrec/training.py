"""Fine-tuning: listwise training of the cross-encoder on logged impressions.

Each example is one clicked candidate with `negatives_per_positive` non-clicked candidates
of the same impression (MIND's "npratio" recipe); the loss is softmax cross-entropy over the
group, so the model learns to put the click first.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from llmrec.config import ModelParams, TrainParams
from llmrec.data.contract import Dataset, history_list
from llmrec.distributed import Distributed
from llmrec.errors import DataError
from llmrec.models.backbone import resolve_backbone
from llmrec.models.cross_encoder import CrossEncoder, pick_device
from llmrec.models.text import TextConfig, item_texts, user_text
from llmrec.train_loop import (
    LoopResult,
    LoopTask,
    add_lora,
    checkpoint_digest,
    merge_lora,
    remove_checkpoint,
    run_loop,
    seed_everything,
    split_validation,
    under_trained,
    validation_ndcg,
)

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
    validation: list[dict] = field(default_factory=list)  # [{"step", "ndcg@10"}] when train.eval_every > 0 (hybrid: "ndcg_full")
    world_size: int = 1          # processes that trained together (torchrun / accelerate launch)
    effective_batch: int = 0     # examples per optimizer step: batch_size x grad_accum_steps x world_size
    precision: str = "fp32"
    planned_steps: int = 0       # the steps max_steps / max_epochs allowed
    stopped: str = "completed"   # completed | early stopping | time limit
    best_step: int | None = None  # with validation: the step whose weights were kept
    under_trained: bool = False  # the time limit stopped it before validation levelled off (see train_loop.under_trained)
    note: str = ""               # how training ended, in a sentence

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def epochs(self) -> float:
        """Passes over the training examples made."""
        return self.steps * self.effective_batch / self.examples if self.examples and self.effective_batch else 0.0

    def length(self) -> str:
        """How long it trained and why it stopped, e.g. '43 epochs (2,064 steps), early stopping, best at epoch 23'."""
        per_epoch = self.examples / self.effective_batch if self.examples and self.effective_batch else 0.0
        text = f"{self.epochs:.0f} epochs ({self.steps:,} steps)" if per_epoch else f"{self.steps:,} steps"
        text += f", {self.stopped}"
        if self.best_step is not None:
            text += f", best at epoch {self.best_step / per_epoch:.0f}" if per_epoch else f", best at step {self.best_step:,}"
        return text


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


def token_lengths(tokenizer: object, texts: list[str]) -> dict[str, int]:
    """Tokens of each distinct text (special tokens included), for length-grouped batches."""
    unique = list(dict.fromkeys(texts))
    ids = tokenizer(unique, add_special_tokens=False, truncation=False)["input_ids"] if unique else []
    return {t: len(i) for t, i in zip(unique, ids)}


def _pair_lengths(tokenizer: object, users: list[str], candidates: list[list[str]], max_length: int) -> np.ndarray:
    """Per click group: the padded length of its longest (user, candidate) pair."""
    lengths = token_lengths(tokenizer, users + [c for group in candidates for c in group])
    return np.array(
        [min(max_length, lengths[u] + max(lengths[c] for c in group) + 3) for u, group in zip(users, candidates)],
        dtype=np.int64,
    )


def train_result(out: str | Path, loop: LoopResult, examples: int, device: torch.device) -> TrainResult:
    short, note = under_trained(loop)
    if short:
        log.warning("%s: %s", out, note)
    return TrainResult(
        model_dir=str(out),
        steps=len(loop.losses),
        examples=examples,
        seconds=round(loop.seconds, 2),
        pairs_per_second=round(loop.pairs_per_second, 2),
        final_loss=float(np.mean(loop.losses[-20:])),
        losses=loop.losses,
        device=str(device),
        validation=loop.validation,
        world_size=loop.world_size,
        effective_batch=loop.effective_batch,
        precision=loop.precision,
        planned_steps=loop.planned_steps,
        stopped=loop.stopped,
        best_step=loop.best_step,
        under_trained=short,
        note=note,
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
    seed_everything(train_params.seed)
    dist = Distributed.from_env(pick_device(train_params.device))
    text = TextConfig(max_history=model_params.max_history, with_text=False)  # the pair shares its tokens with the history
    folder = resolve_backbone(model_params.backbone)
    device = dist.device_for(pick_device(train_params.device))
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

    if train_params.lora_rank:
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
        lengths=_pair_lengths(model.tokenizer, users, candidates, model_params.max_length) if train_params.group_by_length else None,
        validate=validate,
        pairs_per_example=group_size,
        desc="training cross-encoder",
    )
    result = run_loop(task, train_params, out, device, dist, on_step=on_step, progress=progress)
    model.model = merge_lora(model.model)
    if dist.is_main:
        model.save(out)
        remove_checkpoint(out)
    dist.barrier()
    return train_result(out, result, len(groups), device)
