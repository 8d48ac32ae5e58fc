"""What the vector models (two-tower, hybrid) share: a score is user vector . item vector / temperature plus an
item offset, so a frame of (history, item) rows is one dot product per row and a whole catalogue is one matrix
product. A subclass supplies `user_vectors`, `item_vectors` and, if it has them, age offsets."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from llmrec.data.contract import history_list
from llmrec.models.text import TextConfig, item_texts

ROW_BLOCK = 1 << 16  # frame rows scored at a time, for vectors of ROW_WIDTH (about 64k x 512 x 2 floats: 256 MB)
ROW_WIDTH = 512

Scorer = Callable[[pd.DataFrame], np.ndarray]


class VectorRanker:
    ranks_catalogue = True  # one matrix product scores every item for a user
    text: TextConfig
    device: torch.device
    temperature: float

    # -- what a subclass supplies ----------------------------------------------------------------------------------
    def user_vectors(self, histories: Sequence[str | Sequence[str]], texts: Mapping[str, str], batch_size: int = 64) -> torch.Tensor:
        raise NotImplementedError

    def item_vectors(self, item_ids: Sequence[str], texts: Mapping[str, str], batch_size: int = 64,
                     progress: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(scoring vectors (n, width), score offsets (n,) or None) of the items."""
        raise NotImplementedError

    def age_offsets(self, hours: torch.Tensor) -> torch.Tensor | None:
        """Score offsets of items of these ages (hours; NaN = unknown), or None for a model without them."""
        return None

    def _prepare_frame(self, items: Sequence[str], histories: Sequence[str], texts: Mapping[str, str], batch_size: int,
                       progress: bool) -> None:
        """Called before a frame is scored (e.g. to encode every item it needs in one pass)."""

    # -- scoring -------------------------------------------------------------------------------------------------
    def _offsets(self, base: torch.Tensor | None, hours: torch.Tensor) -> torch.Tensor | float:
        age = self.age_offsets(hours)
        total = base if age is None else (age if base is None else base + age)
        return 0.0 if total is None else total

    def _score_frame(self, frame: pd.DataFrame, texts: Mapping[str, str], batch_size: int, progress: bool) -> np.ndarray:
        if len(frame) == 0:
            return np.empty(0, dtype=np.float32)
        hist_codes, uniques = pd.factorize(frame["history"].fillna("").astype(str).to_numpy(dtype=object))
        cand_codes, cands = pd.factorize(frame["item_id"].astype(str).to_numpy(dtype=object))
        self._prepare_frame(list(cands), list(uniques), texts, batch_size, progress)
        items, offsets = self.item_vectors(list(cands), texts, batch_size, progress)
        users = self.user_vectors(list(uniques), texts, batch_size)
        out = np.empty(len(frame), dtype=np.float32)
        h_all = torch.from_numpy(hist_codes.astype(np.int64)).to(self.device)
        c_all = torch.from_numpy(cand_codes.astype(np.int64)).to(self.device)
        ages = frame["age_hours"].to_numpy(dtype=np.float32) if "age_hours" in frame else np.full(len(frame), np.nan, np.float32)
        a_all = torch.from_numpy(ages).to(self.device)
        with torch.inference_mode():
            step = max(1, ROW_BLOCK * ROW_WIDTH // max(1, items.shape[1]))  # wide vectors: fewer rows at a time
            for start in range(0, len(frame), step):
                h, c = h_all[start : start + step], c_all[start : start + step]
                score = (users[h] * items[c]).sum(-1) / self.temperature
                score = score + self._offsets(None if offsets is None else offsets[c], a_all[start : start + step])
                out[start : start + step] = score.float().cpu().numpy()
        return out

    def score_frame(self, frame: pd.DataFrame, items_df: pd.DataFrame, batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """Scores of the frame's rows (columns history, item_id, optional age_hours), higher = better, in row order.
        Unique histories become user vectors once."""
        return self._score_frame(frame, item_texts(items_df, self.text), batch_size, progress)

    def scorer(self, items_df: pd.DataFrame, batch_size: int = 64, progress: bool = False) -> Scorer:
        """A Scorer (frame -> scores) for evaluation and serving; item texts are rendered once."""
        texts = item_texts(items_df, self.text)
        return lambda frame: self._score_frame(frame, texts, batch_size, progress)

    def catalogue_scorer(self, items_df: pd.DataFrame, batch_size: int = 64) -> Callable[[Sequence[str], np.ndarray | None], np.ndarray]:
        """(histories: space-separated ids; ages in hours or None) -> users x items scores, one matrix product
        over the item vectors, computed once (items in the rows' order of `items_df`)."""
        ids = items_df["item_id"].astype(str).tolist()
        texts = item_texts(items_df, self.text)
        vectors, offsets = self.item_vectors(ids, texts, batch_size)

        def score(histories: Sequence[str], ages: np.ndarray | None) -> np.ndarray:
            users = self.user_vectors(list(histories), texts, batch_size)
            hours = np.full(len(ids), np.nan, dtype=np.float32) if ages is None else np.asarray(ages, dtype=np.float32)
            with torch.inference_mode():
                return (users @ vectors.T / self.temperature + self._offsets(offsets, torch.from_numpy(hours).to(self.device))
                        ).float().cpu().numpy()

        return score

    def recommend(self, history: str | Sequence[str], items_df: pd.DataFrame, k: int = 10, exclude_history: bool = True,
                  batch_size: int = 64) -> pd.DataFrame:
        """The top `k` catalogue items for one history (oldest first): item_id, score, rank (1 = best).

        The whole catalogue is scored as one matrix-vector product; ties keep catalogue order. With
        `exclude_history`, items of the whole history are never recommended."""
        texts = item_texts(items_df, self.text)
        ids = list(texts)
        vectors, offsets = self.item_vectors(ids, texts, batch_size)
        user = self.user_vectors([history], texts, batch_size)[0]
        with torch.inference_mode():
            unknown_age = torch.full((len(ids),), float("nan"), device=self.device)
            scores = (vectors @ user / self.temperature + self._offsets(offsets, unknown_age)).float().cpu().numpy()
        if exclude_history:
            seen = set(history_list(history) if isinstance(history, str) else history)
            scores = np.where([i in seen for i in ids], -np.inf, scores)
        order = np.argsort(-scores, kind="stable")[:k]
        order = order[np.isfinite(scores[order])]
        return pd.DataFrame({"item_id": [ids[i] for i in order], "score": scores[order], "rank": np.arange(1, len(order) + 1)})
