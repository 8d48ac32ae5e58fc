"""Load any saved ranker by the type in its `llmrec.json`, and get a Scorer for it.

Training, evaluation, the MLflow pyfunc model and the REST server all go through here, so a new
model type is one branch in two functions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from llmrec.errors import ModelError

CROSS_ENCODER, TWO_TOWER, HYBRID = "cross-encoder", "two-tower", "hybrid"


def ranker_type(folder: str | Path) -> str:
    """The model type a saved ranker folder holds (folders from before types existed are cross-encoders)."""
    meta = Path(folder) / "llmrec.json"
    if not meta.is_file():
        raise ModelError(f"{folder} is not a saved llmrec model (no llmrec.json)", fix="train one with `llmrec train`")
    return json.loads(meta.read_text()).get("type", CROSS_ENCODER)


def load_ranker(folder: str | Path, device: str = "auto") -> Any:
    """A CrossEncoder or TwoTower, whichever the folder holds."""
    kind = ranker_type(folder)
    if kind == TWO_TOWER:
        from llmrec.models.two_tower import TwoTower

        return TwoTower.load(folder, device=device)
    if kind == HYBRID:
        from llmrec.models.hybrid import Hybrid

        return Hybrid.load(folder, device=device)
    if kind == CROSS_ENCODER:
        from llmrec.models.cross_encoder import CrossEncoder

        return CrossEncoder.load(folder, device=device)
    raise ModelError(f"unknown model type {kind!r} in {folder}/llmrec.json", fix=f"expected {CROSS_ENCODER}, {TWO_TOWER} or {HYBRID}")


def is_pair_scorer(ranker: Any) -> bool:
    """Pair scorers cost one transformer pass per (user, item): they re-rank lists, not catalogues."""
    from llmrec.models.cross_encoder import CrossEncoder

    return isinstance(ranker, CrossEncoder)


def ranker_scorer(ranker: Any, items: pd.DataFrame, batch_size: int = 64, progress: bool = False):
    """Scorer (frame with history, item_id -> scores) for a loaded ranker, rendering text as in training."""
    if not is_pair_scorer(ranker):  # vector models (two-tower, hybrid) render and cache item texts themselves
        score = ranker.scorer(items, batch_size=batch_size, progress=progress)
        return lambda frame: np.asarray(score(frame), dtype=float)
    from llmrec.evaluation.evaluate import model_scorer

    return model_scorer(ranker, items, batch_size, progress)
