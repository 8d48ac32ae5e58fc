"""Ranking metrics of one positive per case, numpy only: what training and tuning need below the evaluation layer."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def single_positive_metrics(greater: np.ndarray, equal: np.ndarray, ks: Iterable[int]) -> dict[str, np.ndarray]:
    """Per case with one positive: expected MRR, nDCG@k and HR@k over uniformly random orderings of ties.

    `greater` counts the candidates scored strictly above the positive, `equal` the other candidates scored
    the same; the positive's rank is then uniform on greater + 1 .. greater + equal + 1, so constant scores
    over 100 candidates give HR@10 = 0.1 exactly. With one positive, nDCG@k = 1/log2(rank + 1) within k
    (the ideal DCG is 1) and HR@k = Recall@k = P(rank <= k).
    """
    greater = np.asarray(greater, dtype=np.int64)
    equal = np.asarray(equal, dtype=np.int64)
    if (greater < 0).any() or (equal < 0).any():
        raise ValueError("candidate counts must not be negative")
    first, last = greater + 1, greater + equal + 1  # the ranks the positive may take
    size = equal + 1.0
    top = int(last.max(initial=1))
    harmonic = np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, top + 1))])
    out = {"mrr": (harmonic[last] - harmonic[first - 1]) / size}
    for k in ks:
        if int(k) != k or k < 1:
            raise ValueError(f"cut-offs must be positive integers, got {k!r}")
        k = int(k)
        gains = np.concatenate([[0.0], np.cumsum(1.0 / np.log2(np.arange(2, k + 2)))])  # sum of 1/log2(r+1), r <= k
        inside = np.clip(last, 0, k)
        out[f"ndcg@{k}"] = np.where(first <= k, (gains[inside] - gains[np.clip(first - 1, 0, k)]) / size, 0.0)
        out[f"hr@{k}"] = np.clip(k - greater, 0, equal + 1) / size
    return out
