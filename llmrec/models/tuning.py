"""Baselines get the tuning the model gets: settings chosen on the same validation slice.

The slice (`llmrec.data.sequences.hold_out_last`) holds out the last training consumption of the users
whose last one is the most recent; a collaborative filter is fitted on the rest for each setting of a
grid, ranks each held-out item against every item it knows minus the user's earlier consumptions, and
the setting with the best mean nDCG@10 (ties resolved in expectation) wins. The baseline is then refitted
on the whole training slice with it. SASRec's training length is chosen the same way, by early stopping
on the same slice (`llmrec.training.hybrid.fit_hybrid`), and the hybrid's EASE part gets its l2 here too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp

from llmrec.data.contract import Dataset
from llmrec.data.sequences import AUTO as AUTO_VALIDATION
from llmrec.data.sequences import hold_out_last, timed_sequences
from llmrec.models.collaborative import ease_matrix, itemknn_matrix, most_consumed, sequence_matrix
from llmrec.rank_metrics import single_positive_metrics

log = logging.getLogger(__name__)

EASE_L2_GRID = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0, 10000.0)
ITEMKNN_NEIGHBOURS_GRID = (10, 20, 50, 100, 200, 500)
MIN_CASES = 20  # fewer held-out consumptions than this: too few to choose on, the defaults are kept
USER_BLOCK = 1024  # held-out users scored at a time (dense users x items scores)


@dataclass
class ValidationSlice:
    """The fit part (user x item matrix of everything but the held-out consumptions) and the held-out cases."""

    fit: sp.csr_matrix           # users x items, binary
    items: pd.Index              # columns of `fit`: the items consumed in the fit part
    users: np.ndarray            # row of `fit` of each held-out case
    answers: np.ndarray          # column of each held-out item

    def __len__(self) -> int:
        return len(self.answers)


@dataclass
class Choice:
    """A setting chosen on the validation slice, and the validation nDCG@10 of every value tried."""

    value: float
    scores: dict[float, float] = field(default_factory=dict)
    cases: int = 0

    def describe(self, name: str) -> str:
        if not self.scores:
            return f"{name} {self.value:g} (default: too few held-out consumptions to choose on)"
        tried = ", ".join(f"{v:g}: {s:.4f}" for v, s in self.scores.items())
        return f"{name} {self.value:g}, chosen on {self.cases} held-out consumptions (validation nDCG@10 {tried})"


def validation_slice(train: Dataset, users: int | str | None = AUTO_VALIDATION) -> ValidationSlice:
    """The validation slice of a training set (see the module docstring)."""
    sequences, times = timed_sequences(train)
    every = {i for seq in sequences for i in seq}
    fit_sequences, _, held = hold_out_last(sequences, times, every, users)
    items = pd.Index(sorted({i for seq in fit_sequences for i in seq}))
    fit = sequence_matrix(fit_sequences, items)
    row = {u: k for k, u in enumerate(fit_sequences.index)}
    answers = items.get_indexer([h.item for h in held])
    known = answers >= 0  # an item only the held-out consumption shows: no collaborative filter can rank it
    return ValidationSlice(fit, items, np.asarray([row[h.user] for h in held], dtype=np.int64)[known], answers[known])


def validation_ndcg(part: ValidationSlice, weights: np.ndarray | sp.spmatrix, columns: np.ndarray | None = None) -> float:
    """Mean nDCG@10 of the held-out items ranked by history @ weights (item x item, over `columns` of the fit
    matrix, all when None; other items score 0) among every item minus the user's fit consumptions."""
    values = []
    for start in range(0, len(part), USER_BLOCK):
        rows, answers = part.users[start : start + USER_BLOCK], part.answers[start : start + USER_BLOCK]
        history = part.fit[rows]
        sub = history if columns is None else history[:, columns]
        scores = np.zeros(history.shape, dtype=np.float64)
        product = sub @ weights
        product = product.toarray() if sp.issparse(product) else np.asarray(product)
        if columns is None:
            scores[:] = product
        else:
            scores[:, columns] = product
        at = np.arange(len(rows))
        right = scores[at, answers]
        seen = history.toarray().astype(bool)
        seen[at, answers] = False
        scores[seen] = -np.inf
        greater = (scores > right[:, None]).sum(1)
        equal = (scores == right[:, None]).sum(1) - 1
        values.append(single_positive_metrics(greater, equal, [10])["ndcg@10"])
    return float(np.concatenate(values).mean()) if values else float("nan")


def choose(part: ValidationSlice, grid: tuple[float, ...], default: float,
           weights: Callable[[float], tuple[np.ndarray | sp.spmatrix, np.ndarray | None]], name: str) -> Choice:
    """The value of `grid` whose weights rank the held-out consumptions best (the smaller of equals);
    `default` when the slice is too small to choose on."""
    if len(part) < MIN_CASES:
        return Choice(default)
    scores = {}
    for value in grid:
        matrix, columns = weights(value)
        scores[value] = validation_ndcg(part, matrix, columns)
        log.debug("%s %g: validation nDCG@10 %.4f", name, value, scores[value])
    best = max(grid, key=lambda v: (scores[v], -v))
    return Choice(best, scores, len(part))


def choose_ease_l2(part: ValidationSlice, default: float, max_items: int) -> Choice:
    top = most_consumed(part.fit, max_items)
    return choose(part, EASE_L2_GRID, default, lambda l2: (ease_matrix(part.fit[:, top], l2), top), "EASE l2")


def choose_itemknn_neighbours(part: ValidationSlice, default: int, shrink: float) -> Choice:
    return choose(part, ITEMKNN_NEIGHBOURS_GRID, default, lambda k: (itemknn_matrix(part.fit, int(k), shrink), None),
                  "ItemKNN neighbours")
