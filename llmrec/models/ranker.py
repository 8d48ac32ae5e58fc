"""Load any saved ranker by the type in its `llmrec.json`, and get a Scorer for it.

Training, evaluation, the MLflow pyfunc model and the REST server all go through here. Every model class
offers the same interface: `load(folder, device)`, `save(folder)`, `scorer(items, batch_size, progress)`
(frames of (history, item_id) -> scores), `text_scorer(items, batch_size)` (history texts, candidate texts ->
scores), `catalogue_scorer(items, batch_size)` (histories -> users x items scores; a pair scorer raises) and
`ranks_catalogue`. Which class a type name means is `llmrec.model_types.MODEL_TYPES`'s.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from llmrec.errors import ModelError
from llmrec.model_types import MODEL_TYPES
from llmrec.models.io import read_meta


def ranker_type(folder: str | Path) -> str:
    """The model type a saved ranker folder holds (folders from before types existed are cross-encoders)."""
    return read_meta(folder)["type"]




def load_ranker(folder: str | Path, device: str = "auto") -> Any:
    """The ranker a saved folder holds, of whichever type its llmrec.json names."""
    kind = ranker_type(folder)
    if kind not in MODEL_TYPES:
        raise ModelError(f"unknown model type {kind!r} in {folder}/llmrec.json", fix=f"expected one of {', '.join(MODEL_TYPES)}")
    return MODEL_TYPES[kind].load_class().load(folder, device=device)


def is_pair_scorer(ranker: Any) -> bool:
    """Pair scorers cost one transformer pass per (user, item): they re-rank lists, not catalogues."""
    return not ranker.ranks_catalogue


def ranker_scorer(ranker: Any, items: pd.DataFrame, batch_size: int = 64, progress: bool = False):
    """Scorer (frame with history, item_id -> scores) for a loaded ranker, rendering text as in training."""
    score = ranker.scorer(items, batch_size=batch_size, progress=progress)  # every type renders text as in training
    return lambda frame: np.asarray(score(frame), dtype=float)


TextScorer = Callable[[Sequence[str], Sequence[str]], np.ndarray]


def text_scorer(ranker: Any, items: pd.DataFrame | None = None, batch_size: int = 64) -> TextScorer:
    """(texts of one user's history items, oldest first; candidate item texts) -> scores, in candidate order.

    Item texts are rendered by `llmrec.models.text` (the serving path renders request texts with it too),
    so a catalogue item scores the same whether it comes as its id through `ranker_scorer` or as its text.
    For a two-tower model the vectors of the `items` catalogue are encoded now, once; other texts are
    encoded per call. A hybrid model recognises catalogue texts as their items (ids included); other
    texts are cold items. A cross-encoder renders the user text with `render_user`, as training did.
    """
    return ranker.text_scorer(items, batch_size)


CatalogueScorer = Callable[[Sequence[str], "np.ndarray | None"], np.ndarray]


def catalogue_scorer(ranker: Any, items: pd.DataFrame, batch_size: int = 64) -> CatalogueScorer:
    """(histories: space-separated ids, oldest first; each item's age in hours or None) -> scores (users x items, in
    the rows' order of `items`): what `ranker_scorer` gives every (history, item) pair, as one matrix product over
    the item vectors, computed once. Vector models only (two-tower, hybrid); a cross-encoder raises ModelError."""
    return ranker.catalogue_scorer(items, batch_size)
