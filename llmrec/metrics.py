"""Ranking metrics, MIND's official per-impression definitions (Wu et al., ACL 2020), vectorised.

An impression is one list of candidates: `labels` (1 = clicked, 0 = not, -1 = unknown) and `scores`
(higher = ranked first). Without ties the values equal MIND's evaluate.py; tied scores get the
expected value over uniformly random orderings of each tie, so no model gains from the order the
candidates were logged in:

- AUC counts a tied (positive, negative) pair half (Mann-Whitney U / (n_pos n_neg)).
- MRR, DCG and Recall@k are sums of rank weights over the positives; a tie group occupying ranks
  r..s and holding p of its m candidates' positives contributes p/m * sum(weight(r..s)).
- HR@k = P(at least one positive in the top k). Only the tie group straddling rank k is random: with
  c positives among its m candidates and j of its slots inside the top k, P(none of the j slots holds
  a positive) = C(m-c, j) / C(m, j) (hypergeometric), computed exactly via log-gamma.

`auc`, `mrr`, `dcg`, `ndcg`, `hit_rate` and `recall` score one impression (simple, per impression);
`impression_metrics` scores a whole frame of impressions at once, with no Python loop over
impressions: one sort by (impression, -score), then group and tie-group reductions. `top_k`,
`coverage` and `popularity_bias` describe the top-k lists a ranker would show.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import pandas as pd
from scipy.special import gammaln

from llmrec.rank_metrics import single_positive_metrics  # noqa: F401  (re-exported: one positive per case)

UNKNOWN = -1  # label of a candidate whose outcome was not logged (llmrec.data.contract.UNLABELED)


# ---------------------------------------------------------------- single impression (reference)


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve, ties counted half (Mann-Whitney U / n_pos n_neg); in [0, 1]."""
    labels = np.asarray(labels)
    n_pos = int(labels.sum())
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = pd.Series(scores).rank(method="average").to_numpy()
    return float((ranks[labels == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _tie_groups(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(start rank 0-based, size, positives) of each run of equal scores, best score first."""
    scores = np.asarray(scores, dtype=float)
    labels = np.asarray(labels, dtype=float)
    order = np.argsort(-scores, kind="stable")
    sorted_scores = scores[order]
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    sizes = np.diff(np.r_[starts, len(scores)])
    positives = np.add.reduceat(labels[order], starts) if len(starts) else np.zeros(0)
    return starts, sizes, positives


def _tie_expected(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> float:
    """sum over ranks of weight(rank) * relevance, in expectation over random orderings of ties.

    A tie group occupying ranks r..s holding p of its m candidates' clicks contributes
    (p / m) * sum(weights[r..s]): ties never favour or punish a model (as AUC counts them half).
    """
    starts, sizes, positives = _tie_groups(labels, scores)
    if not len(starts):
        return 0.0
    group_weights = np.add.reduceat(np.asarray(weights, dtype=float), starts)
    return float((positives / sizes * group_weights).sum())


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
    """DCG@k normalised by the ideal DCG@k; in [0, 1]; NaN when nothing was clicked.

    k larger than the list is fine: both DCGs then run over the whole list.
    """
    labels = np.asarray(labels, dtype=float)
    ranks = np.arange(1, len(labels) + 1)
    ideal = float((np.sort(labels)[::-1] * np.where(ranks <= k, 1.0 / np.log2(ranks + 1), 0.0)).sum())
    if ideal == 0:
        return float("nan")
    return dcg(labels, scores, k) / ideal


def recall(labels: np.ndarray, scores: np.ndarray, k: int) -> float:
    """Expected share of the clicked items ranked in the top k; in [0, 1]; NaN when nothing was clicked."""
    n_pos = float(np.asarray(labels).sum())
    if n_pos == 0:
        return float("nan")
    return _tie_expected(labels, scores, (np.arange(len(labels)) < k).astype(float)) / n_pos


def hit_rate(labels: np.ndarray, scores: np.ndarray, k: int) -> float:
    """P(at least one clicked item in the top k) over random orderings of ties; NaN when nothing was clicked.

    With one click per impression (leave-last-out) it equals recall@k.
    """
    if float(np.asarray(labels).sum()) == 0:
        return float("nan")
    p_miss = 1.0
    for start, size, positives in zip(*_tie_groups(labels, scores)):
        start, size, positives = int(start), int(size), int(positives)
        slots = min(max(k - start, 0), size)  # this group's ranks inside the top k
        if slots and positives:
            p_miss *= math.comb(size - positives, slots) / math.comb(size, slots)
    return 1.0 - p_miss


# ---------------------------------------------------------------- vectorised building blocks


def _float32_descending_key(scores: np.ndarray) -> np.ndarray | None:
    """uint32 keys ordering `scores` descending, when every score is exactly a float32 (model outputs are)."""
    as32 = scores.astype(np.float32)
    if not np.array_equal(as32, scores):
        return None
    bits = (as32 + np.float32(0.0)).view(np.uint32)  # -0.0 + 0.0 = +0.0: one key for both zeros
    ascending = np.where(bits >> np.uint32(31), ~bits, bits | np.uint32(0x80000000))
    return ~ascending


def _order(codes: np.ndarray, n_codes: int, scores: np.ndarray, tiebreak: np.ndarray | None = None) -> np.ndarray:
    """Row order by (impression code ascending, score descending[, tiebreak ascending]).

    Rows with equal (code, score) and no tiebreak come in an unspecified (deterministic) order; every
    metric here is invariant to it. One int64 argsort when the scores are float32-exact (code in the
    high 32 bits, an order-preserving image of the score in the low ones), else a score argsort then
    an argsort of code * n + score position: both ~2x faster than np.lexsort.
    """
    n = len(codes)
    if n == 0:
        return np.zeros(0, dtype=np.intp)
    codes = codes.astype(np.int64, copy=False)
    key32 = _float32_descending_key(scores) if n_codes < 2**31 else None
    if key32 is not None:
        order = np.argsort((codes << 32) | key32.astype(np.int64))
    elif n_codes * n < 2**62:
        position = np.empty(n, dtype=np.int64)
        position[np.argsort(-scores)] = np.arange(n)
        order = np.argsort(codes * n + position)
    else:  # pragma: no cover - beyond 2^62 (impressions x rows)
        order = np.lexsort((-scores, codes))
    if tiebreak is not None:
        s, g = scores[order], codes[order]
        run = np.empty(n, dtype=np.int64)
        run[0] = 0
        np.cumsum((s[1:] != s[:-1]) | (g[1:] != g[:-1]), out=run[1:])
        tb = tiebreak[order].astype(np.int64)
        tb -= tb.min()
        span = int(tb.max()) + 1
        if span * (int(run[-1]) + 1) < 2**62:
            order = order[np.argsort(run * span + tb, kind="stable")]
        else:  # pragma: no cover
            order = order[np.lexsort((tb, run))]
    return order


def _scores(frame: pd.DataFrame, column: str = "score") -> np.ndarray:
    scores = frame[column].to_numpy(dtype=float, na_value=np.nan)
    if np.isnan(scores).any():
        raise ValueError(f"{int(np.isnan(scores).sum())} NaN score(s): every candidate needs a score")
    return scores


def _groups(sorted_codes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(is first row of its impression, start row of each impression, impression sizes, 0-based rank of each row)."""
    n = len(sorted_codes)
    first = np.empty(n, dtype=bool)
    first[:1] = True
    np.not_equal(sorted_codes[1:], sorted_codes[:-1], out=first[1:])
    starts = np.flatnonzero(first)
    sizes = np.diff(np.append(starts, n))
    rank0 = np.arange(n, dtype=np.int64) - np.repeat(starts, sizes)
    return first, starts, sizes, rank0


def _p_no_positive(m: np.ndarray, c: np.ndarray, j: np.ndarray) -> np.ndarray:
    """P(none of j slots drawn from m tied candidates, c of them positive, is positive) = C(m-c, j) / C(m, j)."""
    m, c, j = (np.asarray(a, dtype=float) for a in (m, c, j))
    possible = m - c >= j
    m, c, j = m[possible], c[possible], j[possible]
    out = np.zeros(len(possible))
    # (m-c)! (m-j)! / ((m-c-j)! m!), grouped so that c = 0 or j = 0 gives exactly 1
    out[possible] = np.exp((gammaln(m - c + 1) - gammaln(m + 1)) + (gammaln(m - j + 1) - gammaln(m - c - j + 1)))
    return out


def _impression_codes(frame: pd.DataFrame) -> tuple[np.ndarray, pd.Index]:
    """Integer code of each row's impression (in order of first appearance) and the ids."""
    codes, uniques = pd.factorize(frame["impression_id"], sort=False)
    if len(codes) and codes.min() < 0:
        raise ValueError(f"{int((codes < 0).sum())} row(s) without an impression_id")
    return codes, uniques


def _check_ks(ks: Iterable[int]) -> list[int]:
    out: list[int] = []
    for k in ks:
        if int(k) != k or k < 1:
            raise ValueError(f"cut-offs must be positive integers, got {k!r}")
        if int(k) not in out:
            out.append(int(k))
    return out


def metric_columns(ks: Iterable[int]) -> list[str]:
    """Column names `impression_metrics` returns for `ks` (after impression_id)."""
    ks = _check_ks(ks)
    return ["auc", "mrr", *[f"ndcg@{k}" for k in ks], *[f"hr@{k}" for k in ks], *[f"recall@{k}" for k in ks]]


# ---------------------------------------------------------------- per-impression metrics, vectorised


def impression_metrics(frame: pd.DataFrame, ks: list[int]) -> pd.DataFrame:
    """Per-impression AUC, MRR, nDCG@k, HR@k and Recall@k from rows (impression_id, label, score).

    Rows labelled -1 (unknown) or missing are dropped first. Impressions left without both a click
    and a non-click (AUC is undefined there), including those with no labelled row at all, are
    excluded and counted: `result.attrs["skipped"]`, so len(result) + skipped = distinct input
    impressions. Rows come in the order impressions first appear in `frame`; the row order inside an
    impression never matters. Labels other than 0, 1, -1, NaN scores and missing impression ids
    raise ValueError.

    Columns: impression_id, auc, mrr, ndcg@k..., hr@k..., recall@k... (see `metric_columns`).
    """
    ks = _check_ks(ks)
    columns = ["impression_id", *metric_columns(ks)]
    codes, uniques = _impression_codes(frame)
    n_input = len(uniques)
    labels = frame["label"].to_numpy(dtype=float, na_value=np.nan)
    known = (labels != UNKNOWN) & ~np.isnan(labels)
    labels_known = labels[known]
    bad = (labels_known != 0) & (labels_known != 1)
    if bad.any():
        raise ValueError(f"labels must be 0, 1 or {UNKNOWN} (unknown); got {np.unique(labels_known[bad])[:5].tolist()}")
    scores = _scores(frame)
    if not known.all():
        codes, scores = codes[known], scores[known]
    y = labels_known.astype(np.int8)

    # impressions with at least one click and one non-click
    n_rows = np.bincount(codes, minlength=n_input)
    n_clicks = np.bincount(codes, weights=y, minlength=n_input)
    valid = (n_clicks > 0) & (n_clicks < n_rows)
    skipped = int(n_input - valid.sum())
    keep = valid[codes]
    if not keep.all():
        codes, scores, y = codes[keep], scores[keep], y[keep]
    if len(codes) == 0:
        empty = pd.DataFrame({c: pd.Series(dtype=float) for c in columns})
        empty["impression_id"] = pd.Series(uniques[:0])
        empty.attrs["skipped"] = skipped
        return empty

    order = _order(codes, n_input, scores)
    g, s, ys = codes[order], scores[order], y[order]
    n = len(g)
    first, starts, sizes, rank0 = _groups(g)
    n_imp = len(starts)
    npos = np.add.reduceat(ys, starts, dtype=np.int64)
    nneg = sizes - npos

    # tie groups: runs of equal (impression, score)
    tie_first = first.copy()
    tie_first[1:] |= s[1:] != s[:-1]
    tstart = np.flatnonzero(tie_first)
    tsize = np.diff(np.append(tstart, n))
    tpos = np.add.reduceat(ys, tstart, dtype=np.int64)
    timp = np.repeat(np.arange(n_imp), np.add.reduceat(tie_first, starts, dtype=np.int64))  # tie group -> impression
    expected = np.repeat(tpos / tsize, tsize)  # P(row holds a positive) under random tie order

    # AUC: each positive beats the negatives below its tie group and half of those inside it
    cum_neg = np.cumsum(1 - ys, dtype=np.int64)
    neg_before = cum_neg[starts] - (1 - ys[starts])
    neg_through = cum_neg[tstart + tsize - 1] - neg_before[timp]
    pairs2 = tpos * (2 * (nneg[timp] - neg_through) + (tsize - tpos))  # 2 x (Mann-Whitney U contributions)
    auc_values = np.bincount(timp, weights=pairs2, minlength=n_imp) / (2.0 * npos * nneg)

    ranks = rank0 + 1
    out = {"impression_id": uniques.take(g[starts]), "auc": auc_values}
    out["mrr"] = np.add.reduceat(expected / ranks, starts) / npos

    max_size = int(sizes.max())
    discounts = 1.0 / np.log2(np.arange(2, max_size + 2))
    ideal = np.r_[0.0, np.cumsum(discounts)]  # ideal[i] = DCG of i positives on top
    gain = expected * discounts[rank0]
    t_first_rank, t_end_rank = rank0[tstart], rank0[tstart] + tsize  # 0-based, end exclusive
    ndcg_cols, hr_cols, recall_cols = {}, {}, {}
    for k in ks:
        if k >= max_size:
            dcg_k = np.add.reduceat(gain, starts)
            in_top = npos.astype(float)
        else:
            inside = rank0 < k
            dcg_k = np.add.reduceat(np.where(inside, gain, 0.0), starts)
            in_top = np.add.reduceat(np.where(inside, expected, 0.0), starts)
        ndcg_cols[f"ndcg@{k}"] = dcg_k / ideal[np.minimum(npos, k)]
        recall_cols[f"recall@{k}"] = in_top / npos
        # HR: a positive in a tie group wholly inside the top k is a sure hit; else only the straddling group is random
        sure = np.bincount(timp[(t_end_rank <= k) & (tpos > 0)], minlength=n_imp) > 0
        straddle = np.flatnonzero((t_first_rank < k) & (t_end_rank > k))
        p_miss = np.ones(n_imp)
        p_miss[timp[straddle]] = _p_no_positive(tsize[straddle], tpos[straddle], k - t_first_rank[straddle])
        p_miss[sure] = 0.0
        hr_cols[f"hr@{k}"] = 1.0 - p_miss
    out.update(ndcg_cols)
    out.update(hr_cols)
    out.update(recall_cols)
    result = pd.DataFrame(out)
    result.attrs["skipped"] = skipped
    return result


def summarize(per_impression: pd.DataFrame) -> dict[str, float]:
    """Mean of every metric column over impressions, their count, and "skipped" when attrs carry it."""
    metrics = {c: float(per_impression[c].mean()) for c in per_impression.columns if c != "impression_id"}
    metrics["impressions"] = float(len(per_impression))
    if "skipped" in per_impression.attrs:
        metrics["skipped"] = float(per_impression.attrs["skipped"])
    return metrics


# ---------------------------------------------------------------- top-k lists and catalogue metrics


def top_k(frame: pd.DataFrame, k: int) -> pd.DataFrame:
    """The k highest-scored rows of each impression: impression_id, item_id, rank (1 = best).

    Ties are broken by item_id ascending, so the lists are deterministic; impressions come in the
    order they first appear, ranks ascending. Labels are ignored. Vectorised (one sort).
    """
    if int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    codes, uniques = _impression_codes(frame)
    items, _ = pd.factorize(frame["item_id"], sort=True)  # missing item ids (code -1) sort first
    order = _order(codes, len(uniques), _scores(frame), tiebreak=items)
    _, _, _, rank0 = _groups(codes[order])
    rows = order[rank0 < k]
    return pd.DataFrame(
        {
            "impression_id": frame["impression_id"].take(rows).to_numpy(),
            "item_id": frame["item_id"].take(rows).to_numpy(),
            "rank": rank0[rank0 < k] + 1,
        }
    )


def coverage(topk: pd.DataFrame, catalogue_size: int) -> float:
    """Catalogue coverage: distinct items in all the top-k lists / catalogue size; in [0, 1] for catalogue items."""
    if catalogue_size <= 0:
        raise ValueError(f"catalogue_size must be positive, got {catalogue_size}")
    return float(topk["item_id"].nunique() / catalogue_size)


def popularity_bias(topk: pd.DataFrame, item_popularity: pd.Series) -> float:
    """Mean popularity percentile (0..1) of the recommended items, over every slot of every top-k list.

    `item_popularity` maps item_id -> training popularity (e.g. clicks) over the catalogue. An item's
    percentile is the mid-rank P(a random catalogue item is less popular) + 0.5 P(equally popular):
    recommending uniformly from the catalogue gives 0.5, only the most popular items -> 1, the least
    popular -> 0. Items missing from `item_popularity` (or NaN) count as popularity 0 (never clicked).
    An item recommended to many users counts once per list. NaN for empty lists.
    """
    if len(topk) == 0:
        return float("nan")
    catalogue = np.sort(item_popularity.fillna(0).to_numpy(dtype=float))
    if len(catalogue) == 0:
        raise ValueError("item_popularity is empty")
    values = topk["item_id"].map(item_popularity).fillna(0).to_numpy(dtype=float)
    below = np.searchsorted(catalogue, values, side="left")
    at_or_below = np.searchsorted(catalogue, values, side="right")
    return float(((below + at_or_below) / (2.0 * len(catalogue))).mean())
