"""The saved-model folder every type shares: `llmrec.json` (type and settings), `model.safetensors` (weights),
its fingerprint, and the device a model loads onto. Each model class reads and writes its folder through here."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from llmrec.errors import ModelError

META_FILE = "llmrec.json"
WEIGHTS_FILE = "model.safetensors"
UNTYPED = "cross-encoder"  # folders saved before llmrec.json named a type hold cross-encoders


def read_meta(folder: str | Path, expect: str | None = None) -> dict[str, Any]:
    """A saved model folder's llmrec.json; with `expect`, it must hold a model of that type."""
    path = Path(folder) / META_FILE
    if not path.is_file():
        raise ModelError(f"{folder} is not a saved llmrec model (no {META_FILE})", where=str(folder),
                         fix="train one with `llmrec train`, or point to the folder it wrote (train.out)")
    meta = json.loads(path.read_text())
    kind = meta.setdefault("type", UNTYPED)
    if expect is not None and kind != expect:
        raise ModelError(f"the folder holds a {kind!r} model, not a {expect} one", where=str(path),
                         fix="load it with llmrec.models.ranker.load_ranker, which picks the class of its type")
    return meta


def write_meta(folder: str | Path, meta: dict[str, Any]) -> None:
    (Path(folder) / META_FILE).write_text(json.dumps(meta, indent=2))


def fingerprint(folder: str | Path) -> str:
    """sha256 (16 hex) of a saved model's weights: ties metrics and registry entries to the exact model."""
    path = Path(folder) / WEIGHTS_FILE
    if not path.is_file():
        raise ModelError(f"no {WEIGHTS_FILE} in the model folder", where=str(folder), fix="run `llmrec train`")
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def pick_device(device: str = "auto") -> torch.device:
    """CUDA, then Apple MPS, then CPU; or the one asked for."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelError("train.device is 'cuda' but no CUDA device is available", fix="use device=auto or cpu")
    return torch.device(device)
