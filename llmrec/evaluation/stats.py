"""Uncertainty of holdout metrics: paired bootstrap over impressions."""

from __future__ import annotations

import numpy as np
import pandas as pd


def paired_bootstrap(
    challenger: pd.DataFrame,
    champion: pd.DataFrame,
    metric: str,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, float]:
    """Mean difference challenger - champion of a per-impression metric, with a percentile interval.

    Both frames hold per-impression rows (impression_id + metric columns) for the same holdout;
    impressions are resampled with replacement, the same ones for both models (a paired design,
    Efron & Tibshirani 1993), so the interval reflects the difference, not each model's spread.
    """
    joined = challenger[["impression_id", metric]].merge(
        champion[["impression_id", metric]], on="impression_id", suffixes=("_a", "_b")
    )
    diff = (joined[f"{metric}_a"] - joined[f"{metric}_b"]).to_numpy(dtype=float)
    if len(diff) == 0:
        raise ValueError("the two evaluations share no impression")
    rng = np.random.default_rng(seed)
    chunk = max(1, 2_000_000 // len(diff))  # bounded memory on large holdouts
    means = np.concatenate(
        [diff[rng.integers(0, len(diff), size=(min(chunk, n_resamples - s), len(diff)))].mean(axis=1) for s in range(0, n_resamples, chunk)]
    )
    alpha = (1 - confidence) / 2
    return {
        "metric": metric,
        "difference": float(diff.mean()),
        "low": float(np.quantile(means, alpha)),
        "high": float(np.quantile(means, 1 - alpha)),
        "confidence": confidence,
        "impressions": int(len(diff)),
    }


def bootstrap_intervals(
    per_impression: pd.DataFrame,
    metrics: list[str],
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap interval of the mean of each metric column, resampling impressions.

    The resampled index sets depend only on the seed and the number of impressions, so rankers
    evaluated on the same impressions get intervals from the same resamples.
    """
    n = len(per_impression)
    if n == 0:
        return {}
    values = per_impression[metrics].to_numpy(dtype=float)
    rng = np.random.default_rng(seed)
    chunk = max(1, 2_000_000 // n)
    means = []
    for start in range(0, n_resamples, chunk):
        idx = rng.integers(0, n, size=(min(chunk, n_resamples - start), n))
        means.append(np.nanmean(values[idx], axis=1))  # (resamples, metrics)
    means = np.concatenate(means)
    alpha = (1 - confidence) / 2
    low, high = np.nanquantile(means, alpha, axis=0), np.nanquantile(means, 1 - alpha, axis=0)
    return {m: (float(lo), float(hi)) for m, lo, hi in zip(metrics, low, high)}
