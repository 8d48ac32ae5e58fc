"""Item-item collaborative filters in closed form: EASE and ItemKNN weights of a user x item matrix.

Both learn from a binary user x item consumption matrix X and give an item x item weight matrix W
(W[h, c]: how much consuming h says about c); a user with history row x scores x @ W. The EASE
baseline, ItemKNN baseline and the hybrid's EASE part all use these, so they cannot disagree.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.linalg
import scipy.sparse as sp


def sequence_matrix(sequences: pd.Series, index: pd.Index) -> sp.csr_matrix:
    """Binary user x item matrix (rows in the order of `sequences`, columns `index`) of the items in each
    user's sequence; items outside `index` are left out."""
    rows, cols = [], []
    for u, seq in enumerate(sequences):
        found = index.get_indexer(list(seq)) if len(seq) else np.zeros(0, dtype=np.int64)
        found = np.unique(found[found >= 0])
        rows.append(np.full(len(found), u, dtype=np.int64))
        cols.append(found)
    row, col = (np.concatenate(rows), np.concatenate(cols)) if rows else (np.zeros(0, np.int64), np.zeros(0, np.int64))
    return sp.csr_matrix((np.ones(len(row)), (row, col)), shape=(len(sequences), len(index)))


def history_matrix(histories: Sequence[Sequence[str]], index: pd.Index) -> sp.csr_matrix:
    """Binary histories x item matrix of item-id lists (ids outside `index` dropped, repeats counted once)."""
    return sequence_matrix(pd.Series(list(histories), dtype=object), index)


def most_consumed(X: sp.csr_matrix, n: int) -> np.ndarray:
    """Sorted column indices of the `n` most consumed items of a user x item matrix."""
    counts = np.asarray(X.sum(axis=0)).ravel()
    return np.sort(np.argsort(-counts, kind="stable")[:n])


def ease_matrix(X: sp.csr_matrix, l2: float) -> np.ndarray:
    """EASE's item x item weights B (Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", WWW 2019),
    dense float64 with a zero diagonal: P = (X^T X + l2 I)^-1, B = I - P diag(1/diag(P))."""
    gram = (X.T @ X).toarray().astype(np.float64)
    gram[np.diag_indices_from(gram)] += l2
    B = scipy.linalg.inv(gram, overwrite_a=True, check_finite=False)
    del gram
    B /= -np.diag(B).copy()  # B_ij = -P_ij / P_jj
    np.fill_diagonal(B, 0.0)
    return B


def itemknn_matrix(X: sp.csr_matrix, neighbours: int, shrink: float) -> sp.csr_matrix:
    """ItemKNN's weights W[h, c]: the shrunk cosine sim(h, c) = |users(h) & users(c)| / (sqrt|users(h)| sqrt|users(c)|
    + shrink), each candidate c keeping its `neighbours` most similar items h (sim(c, c) = 0)."""
    co = (X.T @ X).tocsr()
    norms = np.sqrt(co.diagonal())
    co.setdiag(0.0)
    co.eliminate_zeros()
    co = co.tocoo()  # row = candidate c, col = neighbour h (co is symmetric)
    sim = co.data / (norms[co.row] * norms[co.col] + shrink)
    order = np.lexsort((co.col, -sim, co.row))
    row, col, sim = co.row[order], co.col[order], sim[order]
    keep = np.arange(len(row)) - np.searchsorted(row, row) < neighbours
    return sp.csr_matrix((sim[keep], (col[keep], row[keep])), shape=co.shape)
