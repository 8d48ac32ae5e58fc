"""Fine-tuning: listwise training of the cross-encoder on logged impressions.

Each example is one clicked candidate with `negatives_per_positive` non-clicked candidates
of the same impression (MIND's "npratio" recipe); the loss is softmax cross-entropy over the
group, so the model learns to put the click first.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import shutil
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
    validation: list[dict] = field(default_factory=list)  # [{"step", "ndcg@10"}] when train.eval_every > 0

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


# -- checkpoints ---------------------------------------------------------------------------------------------------
CHECKPOINT_DIR = "checkpoint"        # <out>/checkpoint/: model/ (safetensors via the model's own save) + the files below
CHECKPOINT_META = "checkpoint.json"  # {"step": N, "digest": ...}: read first, to decide whether to resume
TRAINER_STATE = "trainer_state.pt"   # optimizer, scheduler, RNG states, data order/cursor, losses
# Params that never change what training computes: a checkpoint written under other values still applies.
_NOT_HASHED = {"checkpoint_every", "resume", "out", "device"}


def checkpoint_digest(model_params: ModelParams, train_params: TrainParams, data: pd.DataFrame, **extra: object) -> str:
    """sha256 (16 hex) of everything that shapes the training trajectory: model and train params (but
    not checkpoint_every/resume/out/device), the training examples and `extra` (e.g. the pooling)."""
    train = {k: v for k, v in train_params.model_dump().items() if k not in _NOT_HASHED}
    h = hashlib.sha256(json.dumps({"model": model_params.model_dump(), "train": train, "extra": extra}, sort_keys=True, default=str).encode())
    h.update(data.to_json(orient="values", default_handler=str).encode())
    return h.hexdigest()[:16]


def rng_states() -> dict:
    """The global RNG states (torch, numpy's legacy global, python `random`) as tensors and plain types."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)],
        "python": random.getstate(),
    }


def set_rng_states(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))


def save_checkpoint(out: str | Path, step: int, digest: str, save_model: Callable[[Path], object], state: dict) -> Path:
    """Write <out>/checkpoint/ atomically: into a temporary sibling folder, then renamed into place
    (the previous checkpoint is renamed aside first and removed last, so one complete checkpoint
    exists at every moment; `find_checkpoint` also accepts the aside copy)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    final, aside = out / CHECKPOINT_DIR, out / f"{CHECKPOINT_DIR}.old"
    tmp = out / f"{CHECKPOINT_DIR}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_model(tmp / "model")
    torch.save(state, tmp / TRAINER_STATE)
    (tmp / CHECKPOINT_META).write_text(json.dumps({"step": step, "digest": digest}))
    if final.exists():
        shutil.rmtree(aside, ignore_errors=True)
        final.rename(aside)
    tmp.rename(final)
    shutil.rmtree(aside, ignore_errors=True)
    log.debug("checkpoint at step %d written to %s", step, final)
    return final


def find_checkpoint(out: str | Path, digest: str, resume: bool) -> Path | None:
    """The checkpoint folder to resume from, or None (no checkpoint, resume off, or other params/data: logged)."""
    out = Path(out)
    for folder in (out / CHECKPOINT_DIR, out / f"{CHECKPOINT_DIR}.old"):
        meta_path = folder / CHECKPOINT_META
        if not meta_path.is_file():
            continue
        if not resume:
            log.info("ignoring the checkpoint in %s (train.resume is off): starting fresh", folder)
            return None
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError) as exc:
            log.warning("ignoring an unreadable checkpoint in %s (%s): starting fresh", folder, exc)
            return None
        if meta.get("digest") != digest:
            log.warning("ignoring the checkpoint in %s: it was written with other params or data; starting fresh", folder)
            return None
        return folder
    return None


def load_trainer_state(folder: Path) -> dict:
    """The trainer state of a checkpoint. `torch.load` unpickles, which is why it runs with
    `weights_only=True` (tensors, dicts, lists and plain numbers/strings only, no arbitrary objects);
    and it only ever reads our own file, written by `save_checkpoint` into our own output folder."""
    return torch.load(folder / TRAINER_STATE, map_location="cpu", weights_only=True)


def remove_checkpoint(out: str | Path) -> None:
    out = Path(out)
    for folder in (out / CHECKPOINT_DIR, out / f"{CHECKPOINT_DIR}.old", *out.glob(f"{CHECKPOINT_DIR}.tmp-*")):
        shutil.rmtree(folder, ignore_errors=True)


def _linear_schedule(optimizer: torch.optim.Optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _load_cross_encoder_weights(model: CrossEncoder, folder: Path) -> None:
    """Load a checkpoint's safetensors weights (every shard) into the live model, in place (the
    optimizer keeps pointing at the same parameters)."""
    from safetensors.torch import load_file

    state: dict[str, torch.Tensor] = {}
    for path in sorted(folder.glob("*.safetensors")):
        state.update(load_file(str(path)))
    missing, unexpected = model.model.load_state_dict(state, strict=False)
    tied = set(getattr(model.model, "_tied_weights_keys", None) or [])
    missing = [k for k in missing if not k.endswith("position_ids") and k not in tied]
    if unexpected or missing:
        raise ModelError(
            f"checkpoint weights do not fit the model (missing {missing[:3]}, unexpected {unexpected[:3]})",
            where=str(folder), fix="delete the checkpoint folder to start fresh",
        )


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
    cursor, losses, pairs, first = 0, [], 0, 0
    digest = checkpoint_digest(model_params, train_params, groups, model="cross-encoder")
    resume_from = find_checkpoint(out, digest, train_params.resume) if train_params.checkpoint_every else None
    if resume_from is not None:
        state = load_trainer_state(resume_from)
        _load_cross_encoder_weights(model, resume_from / "model")
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        rng.bit_generator.state = state["data_rng"]
        order, cursor, first = state["order"].numpy(), int(state["cursor"]), int(state["step"])
        losses, pairs = list(state["losses"]), int(state["pairs"])
        set_rng_states(state["rng"])
        log.info("resuming from step %d (checkpoint %s)", first, resume_from)
    pairs_before = pairs
    group_size = train_params.negatives_per_positive + 1
    model.model.train()
    started = time.perf_counter()
    bar = tqdm(range(first, steps), desc="training", unit="step", disable=not progress, initial=first, total=steps)
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
        rate = (pairs - pairs_before) / (time.perf_counter() - started)
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}", pairs_s=f"{rate:.0f}")
        if train_params.checkpoint_every and (step + 1) % train_params.checkpoint_every == 0 and step + 1 < steps:
            save_checkpoint(out, step + 1, digest, model.save, {
                "step": step + 1,
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "data_rng": rng.bit_generator.state,
                "order": torch.from_numpy(np.asarray(order, dtype=np.int64)),
                "cursor": cursor,
                "losses": losses,
                "pairs": pairs,
                "rng": rng_states(),
            })
        if on_step is not None:
            on_step(step, losses[-1])
    seconds = time.perf_counter() - started
    final = float(np.mean(losses[-20:]))
    if not math.isfinite(final):
        raise ModelError("training diverged (loss is not finite)", fix="lower train.lr")
    model.save(out)
    remove_checkpoint(out)
    return TrainResult(
        model_dir=str(out),
        steps=steps,
        examples=len(groups),
        seconds=round(seconds, 2),
        pairs_per_second=round((pairs - pairs_before) / max(seconds, 1e-9), 2),
        final_loss=final,
        losses=losses,
        device=str(model.device),
    )
