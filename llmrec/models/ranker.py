"""Load any saved ranker by the type in its `llmrec.json`, and get a Scorer for it.

Training, evaluation, the MLflow pyfunc model and the REST server all go through here, so a new
model type is one branch in each function.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
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
    from llmrec.models.hybrid import Hybrid
    from llmrec.models.text import item_texts, render_user
    from llmrec.models.two_tower import TwoTower

    if isinstance(ranker, Hybrid):
        catalogue = item_texts(items, ranker.text) if items is not None else {}
        if catalogue:
            ranker.item_vectors(list(catalogue), catalogue, batch_size)  # encode the catalogue's texts now, once

        def hybrid(history: Sequence[str], candidates: Sequence[str]) -> np.ndarray:
            return ranker.score_texts(history, candidates, catalogue, batch_size=batch_size)

        return hybrid
    if isinstance(ranker, TwoTower):
        if items is not None:
            ranker.item_matrix(items, batch_size=batch_size)

        def two_tower(history: Sequence[str], candidates: Sequence[str]) -> np.ndarray:
            return ranker.score_texts(history, candidates, batch_size=batch_size)

        return two_tower

    def cross_encoder(history: Sequence[str], candidates: Sequence[str]) -> np.ndarray:
        user = render_user(history, ranker.text)
        return ranker.score([user] * len(candidates), list(candidates), batch_size=batch_size)

    return cross_encoder


CatalogueScorer = Callable[[Sequence[str], "np.ndarray | None"], np.ndarray]


def catalogue_scorer(ranker: Any, items: pd.DataFrame, batch_size: int = 64) -> CatalogueScorer:
    """(histories: space-separated ids, oldest first; each item's age in hours or None) -> scores (users x items, in
    the rows' order of `items`): what `ranker_scorer` gives every (history, item) pair, as one matrix product over
    the item vectors, computed once. Vector models only (two-tower, hybrid); a cross-encoder raises ModelError."""
    import torch

    from llmrec.models.hybrid import Hybrid
    from llmrec.models.text import item_texts
    from llmrec.models.two_tower import TwoTower

    ids = items["item_id"].astype(str).tolist()
    if isinstance(ranker, Hybrid):
        texts = item_texts(items, ranker.text)
        vectors, bias = ranker.item_vectors(ids, texts, batch_size)

        def hybrid(histories: Sequence[str], ages: np.ndarray | None) -> np.ndarray:
            users = ranker.user_vectors(list(histories), texts, batch_size)
            hours = np.full(len(ids), np.nan, dtype=np.float32) if ages is None else np.asarray(ages, dtype=np.float32)
            with torch.inference_mode():
                offsets = bias + ranker.net.age_bias(torch.from_numpy(hours).to(ranker.device))
                return (users @ vectors.T / ranker.config.temperature + offsets).float().cpu().numpy()

        return hybrid
    if isinstance(ranker, TwoTower):
        texts = item_texts(items, ranker.text)
        order, matrix = ranker.item_matrix(items, batch_size)
        rows = {item: k for k, item in enumerate(order)}
        matrix = matrix[torch.as_tensor([rows[i] for i in ids], device=matrix.device)]

        def two_tower(histories: Sequence[str], ages: np.ndarray | None) -> np.ndarray:
            users = ranker.user_vectors(list(histories), texts, batch_size)
            with torch.inference_mode():
                return (users @ matrix.T / ranker.temperature).float().cpu().numpy()

        return two_tower
    raise ModelError(
        f"a {type(ranker).__name__} scores (user, item) pairs one transformer pass each: it cannot rank a whole catalogue "
        "for many users", fix="use a two-tower or hybrid model (model.type)")
