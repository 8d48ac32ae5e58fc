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
    means = diff[rng.integers(0, len(diff), size=(n_resamples, len(diff)))].mean(axis=1)
    alpha = (1 - confidence) / 2
    return {
        "metric": metric,
        "difference": float(diff.mean()),
        "low": float(np.quantile(means, alpha)),
        "high": float(np.quantile(means, 1 - alpha)),
        "confidence": confidence,
        "impressions": int(len(diff)),
    }
