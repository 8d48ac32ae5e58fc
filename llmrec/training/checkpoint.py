"""Training checkpoints: <out>/checkpoint/ holds the trained module's weights (safetensors), the trainer state
(optimizer, scheduler, gradient scaler, data order and cursor, every RNG, the validation curve) and a digest of
what shapes the trajectory, so a killed run resumes exactly and a checkpoint of other params or data is ignored.
Written atomically by the main process."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from llmrec.config import ModelParams, TrainParams

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoint"   # <out>/checkpoint/: the files below
CHECKPOINT_META = "checkpoint.json"   # {"step": N, "digest": ...}: read first, to decide whether to resume
CHECKPOINT_WEIGHTS = "weights.safetensors"   # the trained module's state (LoRA adapters and user tower included)
TRAINER_STATE = "trainer_state.pt"    # optimizer, scheduler, scaler, RNG states, data order/cursor, losses
# Params that never change what training computes: a checkpoint written under other values still applies.
_NOT_HASHED = {"checkpoint_every", "resume", "out", "device", "max_minutes"}


def checkpoint_digest(model_params: ModelParams, train_params: TrainParams, data: pd.DataFrame, **extra: object) -> str:
    """sha256 (16 hex) of everything that shapes the training trajectory: model and train params (but
    not checkpoint_every/resume/out/device), the training examples and `extra` (e.g. the model type)."""
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


def save_checkpoint(out: str | Path, step: int, digest: str, module: torch.nn.Module, state: dict) -> Path:
    """Write <out>/checkpoint/ atomically: into a temporary sibling folder, then renamed into place
    (the previous checkpoint is renamed aside first and removed last, so one complete checkpoint
    exists at every moment; `find_checkpoint` also accepts the aside copy)."""
    from safetensors.torch import save_model

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    final, aside = out / CHECKPOINT_DIR, out / f"{CHECKPOINT_DIR}.old"
    tmp = out / f"{CHECKPOINT_DIR}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_model(module, str(tmp / CHECKPOINT_WEIGHTS))
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
        if not (folder / CHECKPOINT_WEIGHTS).is_file():
            log.warning("ignoring the checkpoint in %s: it has no %s (older format); starting fresh", folder, CHECKPOINT_WEIGHTS)
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
