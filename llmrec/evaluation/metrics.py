"""Ranking metrics, MIND's official per-impression definitions (Wu et al., ACL 2020).

Each function scores one impression: `labels` (1 = clicked, 0 = not) and `scores` (higher =
ranked first). Ranks are taken by a stable descending sort, as MIND's evaluate.py does.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve, ties counted half (Mann-Whitney U / n_pos n_neg); in [0, 1]."""
    labels = np.asarray(labels)
    n_pos = int(labels.sum())
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = pd.Series(scores).rank(method="average").to_numpy()
    return float((ranks[labels == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _ranked(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    order = np.argsort(-np.asarray(scores, dtype=float), kind="stable")
    return np.asarray(labels, dtype=float)[order]


def mrr(labels: np.ndarray, scores: np.ndarray) -> float:
    """Mean reciprocal rank of the clicked items: sum(1/rank of each click) / n_clicks; in [0, 1]."""
    ranked = _ranked(labels, scores)
    n_pos = ranked.sum()
    if n_pos == 0:
        return float("nan")
    return float((ranked / np.arange(1, len(ranked) + 1)).sum() / n_pos)


def dcg(labels: np.ndarray, scores: np.ndarray, k: int) -> float:
    """Discounted cumulative gain at k with gains 2^rel - 1 and discounts log2(rank + 1)."""
    ranked = _ranked(labels, scores)[:k]
    return float(((2**ranked - 1) / np.log2(np.arange(2, len(ranked) + 2))).sum())


def ndcg(labels: np.ndarray, scores: np.ndarray, k: int) -> float:
    """DCG@k normalised by the ideal DCG@k; in [0, 1]; NaN when nothing was clicked."""
    best = dcg(labels, labels, k)
    if best == 0:
        return float("nan")
    return dcg(labels, scores, k) / best


def impression_metrics(frame: pd.DataFrame, ks: list[int]) -> pd.DataFrame:
    """Per-impression AUC, MRR and nDCG@k from rows (impression_id, label, score).

    Impressions without both a click and a non-click are dropped (AUC is undefined there).
    """
    rows = []
    for impression_id, group in frame.groupby("impression_id", sort=False):
        labels = group["label"].to_numpy()
        if labels.min() == labels.max():
            continue
        scores = group["score"].to_numpy()
        row = {"impression_id": impression_id, "auc": auc(labels, scores), "mrr": mrr(labels, scores)}
        for k in ks:
            row[f"ndcg@{k}"] = ndcg(labels, scores, k)
        rows.append(row)
    return pd.DataFrame(rows)


def summarize(per_impression: pd.DataFrame) -> dict[str, float]:
    """Mean of every metric column over impressions, plus their count."""
    metrics = {c: float(per_impression[c].mean()) for c in per_impression.columns if c != "impression_id"}
    metrics["impressions"] = float(len(per_impression))
    return metrics
