"""Ranking metrics, MIND's official per-impression definitions (Wu et al., ACL 2020).

Each function scores one impression: `labels` (1 = clicked, 0 = not) and `scores` (higher =
ranked first). Without ties the values equal MIND's evaluate.py; tied scores get the expected
value over random orderings of the tie, so no model gains from the order candidates were logged in.
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


def _tie_expected(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> float:
    """sum over ranks of weight(rank) * relevance, in expectation over random orderings of ties.

    A tie group occupying ranks r..s holding p of its m candidates' clicks contributes
    (p / m) * sum(weights[r..s]): ties never favour or punish a model (as AUC counts them half).
    """
    scores = np.asarray(scores, dtype=float)
    labels = np.asarray(labels, dtype=float)
    order = np.argsort(-scores, kind="stable")
    sorted_scores, sorted_labels = scores[order], labels[order]
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    ends = np.r_[starts[1:], len(scores)]
    total = 0.0
    for start, end in zip(starts, ends):
        clicks = sorted_labels[start:end].sum()
        if clicks:
            total += clicks / (end - start) * weights[start:end].sum()
    return float(total)


def mrr(labels: np.ndarray, scores: np.ndarray) -> float:
    """Mean reciprocal rank of the clicked items: sum(1/rank of each click) / n_clicks; in [0, 1]."""
    n_pos = float(np.asarray(labels).sum())
    if n_pos == 0:
        return float("nan")
    return _tie_expected(labels, scores, 1.0 / np.arange(1, len(labels) + 1)) / n_pos


def dcg(labels: np.ndarray, scores: np.ndarray, k: int) -> float:
    """Discounted cumulative gain at k with binary gains (2^1 - 1 = 1) and discounts log2(rank + 1)."""
    ranks = np.arange(1, len(labels) + 1)
    weights = np.where(ranks <= k, 1.0 / np.log2(ranks + 1), 0.0)
    return _tie_expected(labels, scores, weights)


def ndcg(labels: np.ndarray, scores: np.ndarray, k: int) -> float:
    """DCG@k normalised by the ideal DCG@k; in [0, 1]; NaN when nothing was clicked."""
    labels = np.asarray(labels, dtype=float)
    ranks = np.arange(1, len(labels) + 1)
    ideal = float((np.sort(labels)[::-1] * np.where(ranks <= k, 1.0 / np.log2(ranks + 1), 0.0)).sum())
    if ideal == 0:
        return float("nan")
    return dcg(labels, scores, k) / ideal


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
