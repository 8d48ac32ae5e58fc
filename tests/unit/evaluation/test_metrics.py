from fractions import Fraction
from itertools import combinations, product
from math import log2

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import ndcg_score, roc_auc_score

from llmrec import metrics

TOL = 1e-12


def test_perfect_ranking_scores_one():
    labels, scores = np.array([1, 0, 0, 0]), np.array([0.9, 0.3, 0.2, 0.1])
    assert metrics.auc(labels, scores) == pytest.approx(1.0, abs=TOL)
    assert metrics.mrr(labels, scores) == pytest.approx(1.0, abs=TOL)
    assert metrics.ndcg(labels, scores, 5) == pytest.approx(1.0, abs=TOL)


def test_click_ranked_last():
    labels, scores = np.array([1, 0, 0, 0]), np.array([0.0, 0.3, 0.2, 0.1])
    assert metrics.auc(labels, scores) == pytest.approx(0.0, abs=TOL)
    assert metrics.mrr(labels, scores) == pytest.approx(1 / 4, abs=TOL)
    assert metrics.ndcg(labels, scores, 10) == pytest.approx(1 / np.log2(5), abs=TOL)
    assert metrics.ndcg(labels, scores, 3) == pytest.approx(0.0, abs=TOL)  # the click is outside the top 3


def test_hand_computed_two_clicks():
    # ranking by score: c(1), a(0), d(1), b(0)
    labels = np.array([0, 0, 1, 1])
    scores = np.array([0.8, 0.1, 0.9, 0.5])
    assert metrics.mrr(labels, scores) == pytest.approx((1 / 1 + 1 / 3) / 2, abs=TOL)
    dcg = 1 / np.log2(2) + 1 / np.log2(4)
    idcg = 1 / np.log2(2) + 1 / np.log2(3)
    assert metrics.ndcg(labels, scores, 10) == pytest.approx(dcg / idcg, abs=TOL)
    assert metrics.auc(labels, scores) == pytest.approx(0.75, abs=TOL)  # 3 of 4 (pos, neg) pairs ordered


def test_auc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = rng.integers(2, 40)
        labels = rng.integers(0, 2, n)
        if labels.min() == labels.max():
            continue
        scores = rng.integers(0, 5, n).astype(float)  # many ties
        assert metrics.auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-9)


def test_k_larger_than_list():
    labels, scores = np.array([0, 1]), np.array([0.2, 0.1])
    assert metrics.ndcg(labels, scores, 50) == pytest.approx(1 / np.log2(3), abs=TOL)


def test_no_click_is_nan():
    assert np.isnan(metrics.mrr(np.array([0, 0]), np.array([1.0, 2.0])))
    assert np.isnan(metrics.auc(np.array([0, 0]), np.array([1.0, 2.0])))


def test_impression_metrics_skips_one_class_impressions():
    frame = pd.DataFrame(
        {
            "impression_id": ["a", "a", "a", "b", "b"],
            "label": [1, 0, 0, 0, 0],
            "score": [0.1, 0.5, 0.2, 0.3, 0.1],
        }
    )
    per = metrics.impression_metrics(frame, [5])
    assert list(per["impression_id"]) == ["a"]
    summary = metrics.summarize(per)
    assert summary["impressions"] == 1
    assert summary["auc"] == pytest.approx(0.0)
    assert summary["mrr"] == pytest.approx(1 / 3)


def test_ties_get_the_expected_value_over_orderings():
    # all tied: the click is equally likely at ranks 1..4
    labels, scores = np.array([1, 0, 0, 0]), np.zeros(4)
    assert metrics.mrr(labels, scores) == pytest.approx(np.mean(1 / np.arange(1, 5)), abs=TOL)
    assert metrics.ndcg(labels, scores, 2) == pytest.approx((1 + 1 / np.log2(3)) / 4, abs=TOL)
    # the logged order of tied candidates does not matter
    assert metrics.ndcg(np.array([0, 0, 0, 1]), scores, 10) == metrics.ndcg(labels, scores, 10)


def test_ndcg_matches_sklearn_without_ties():
    from sklearn.metrics import ndcg_score

    rng = np.random.default_rng(5)
    for _ in range(200):
        n = int(rng.integers(2, 40))
        labels = rng.integers(0, 2, n)
        if labels.sum() == 0:
            continue
        scores = rng.permutation(n).astype(float)
        for k in (5, 10, 100):
            expected = ndcg_score(labels[None, :], scores[None, :], k=k)
            assert metrics.ndcg(labels, scores, k) == pytest.approx(expected, abs=1e-9)


# ---------------------------------------------------------------- vectorised impression_metrics

KS = [1, 3, 5, 10, 100]


def random_frame(seed: int, n_impressions: int, max_size: int, scores: str, min_size: int = 2) -> pd.DataFrame:
    """Impressions of random sizes with random labels (some one-class), rows shuffled."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(min_size, max_size + 1, n_impressions)
    ids = np.repeat([f"imp{i}" for i in range(n_impressions)], sizes)
    click_rate = np.repeat(rng.uniform(0.02, 0.6, n_impressions), sizes)
    labels = (rng.random(len(ids)) < click_rate).astype(np.int8)
    if scores == "ties":
        values = rng.integers(0, rng.integers(1, 5, n_impressions).repeat(sizes) + 1).astype(float)
    else:
        values = rng.normal(size=len(ids))
    items = [f"n{i}" for i in rng.integers(0, 500, len(ids))]
    frame = pd.DataFrame({"impression_id": ids, "item_id": items, "label": labels, "score": values})
    return frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)


def exact_reference(labels, scores, k):
    """MRR, HR@k, Recall@k, DCG@k as exact fractions, written independently of llmrec."""
    labels, scores = list(map(int, labels)), list(map(float, scores))
    n_pos = sum(labels)
    rank, mrr_sum, recall_sum, p_miss = 1, Fraction(0), Fraction(0), Fraction(1)
    dcg_sum = 0.0
    for value in sorted(set(scores), reverse=True):
        members = [lab for lab, s in zip(labels, scores) if s == value]
        m, c = len(members), sum(members)
        first, last = rank, rank + m - 1
        mrr_sum += Fraction(c, m) * sum(Fraction(1, r) for r in range(first, last + 1))
        inside = max(0, min(last, k) - first + 1)
        recall_sum += Fraction(c * inside, m)
        dcg_sum += c / m * sum(1 / log2(r + 1) for r in range(first, min(last, k) + 1))
        for i in range(inside):  # draw the inside slots one by one without replacement
            p_miss *= Fraction(m - c - i, m - i)
        rank += m
    return mrr_sum / n_pos, 1 - p_miss, recall_sum / n_pos, dcg_sum


def enumerated(labels, scores, k):
    """MRR, HR@k, Recall@k, DCG@k averaged over every equally likely placement of positives inside tie groups."""
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=float)
    groups, rank = [], 1
    for value in sorted(set(scores.tolist()), reverse=True):
        members = labels[scores == value]
        groups.append((rank, len(members), int(members.sum())))
        rank += len(members)
    totals, count = np.zeros(4), 0
    for placement in product(*[list(combinations(range(m), c)) for _, m, c in groups]):
        ranks = [first + slot for (first, _, _), slots in zip(groups, placement) for slot in slots]
        totals += [
            np.mean([1 / r for r in ranks]),
            any(r <= k for r in ranks),
            np.mean([r <= k for r in ranks]),
            sum(1 / log2(r + 1) for r in ranks if r <= k),
        ]
        count += 1
    return totals / count


def ideal_dcg(n_pos, k):
    return sum(1 / log2(r + 1) for r in range(1, min(n_pos, k) + 1))


@pytest.mark.parametrize("scores", ["ties", "continuous"])
def test_random_frames_match_sklearn(scores):
    frame = random_frame(1 if scores == "ties" else 2, 300, 60, scores)
    per = metrics.impression_metrics(frame, KS)
    groups = dict(list(frame.groupby("impression_id")))
    one_class = sum(g["label"].nunique() == 1 for g in groups.values())
    assert one_class > 0 and per.attrs["skipped"] == one_class
    assert len(per) + one_class == len(groups)
    for row in per.to_dict("records"):
        g = groups[row["impression_id"]]
        y, s = g["label"].to_numpy(), g["score"].to_numpy()
        assert row["auc"] == pytest.approx(roc_auc_score(y, s), abs=1e-9)
        for k in KS:
            assert row[f"ndcg@{k}"] == pytest.approx(ndcg_score([y], [s], k=k), abs=1e-9), (row["impression_id"], k)


@pytest.mark.parametrize("scores", ["ties", "continuous"])
def test_random_frames_match_exact_reference(scores):
    frame = random_frame(3 if scores == "ties" else 4, 300, 60, scores)
    per = metrics.impression_metrics(frame, KS).set_index("impression_id")
    for imp, g in frame.groupby("impression_id"):
        y, s = g["label"].to_numpy(), g["score"].to_numpy()
        if y.min() == y.max():
            assert imp not in per.index
            continue
        row = per.loc[imp]
        for k in KS:
            mrr, hr, recall, dcg = exact_reference(y, s, k)
            assert row["mrr"] == pytest.approx(float(mrr), abs=1e-9)
            assert row[f"hr@{k}"] == pytest.approx(float(hr), abs=1e-9), (imp, k)
            assert row[f"recall@{k}"] == pytest.approx(float(recall), abs=1e-9)
            assert row[f"ndcg@{k}"] == pytest.approx(dcg / ideal_dcg(int(y.sum()), k), abs=1e-9)


def test_small_lists_match_enumeration_of_tie_orderings():
    frame = random_frame(5, 250, 9, "ties")
    ks = list(range(1, 11))
    per = metrics.impression_metrics(frame, ks).set_index("impression_id")
    checked = 0
    for imp, g in frame.groupby("impression_id"):
        y, s = g["label"].to_numpy(), g["score"].to_numpy()
        if imp not in per.index:
            continue
        for k in ks:
            mrr, hr, recall, dcg = enumerated(y, s, k)
            assert per.loc[imp, "mrr"] == pytest.approx(mrr, abs=1e-9)
            assert per.loc[imp, f"hr@{k}"] == pytest.approx(hr, abs=1e-9), (imp, k)
            assert per.loc[imp, f"recall@{k}"] == pytest.approx(recall, abs=1e-9)
            assert per.loc[imp, f"ndcg@{k}"] == pytest.approx(dcg / ideal_dcg(int(y.sum()), k), abs=1e-9)
        checked += 1
    assert checked > 150


@pytest.mark.parametrize("scores", ["ties", "continuous"])
def test_vectorised_equals_per_impression_functions(scores):
    frame = random_frame(6 if scores == "ties" else 7, 200, 40, scores)
    ks = [1, 2, 5, 20, 50]
    per = metrics.impression_metrics(frame, ks)
    shuffled = metrics.impression_metrics(frame.sample(frac=1.0, random_state=11), ks).set_index("impression_id")
    pd.testing.assert_frame_equal(per.set_index("impression_id").loc[shuffled.index], shuffled, rtol=0, atol=1e-12)
    cut_offs = [f"{m}@{k}" for m in ("ndcg", "hr", "recall") for k in ks]
    assert list(per.columns) == ["impression_id", "auc", "mrr", *cut_offs]
    assert list(per["impression_id"]) == [i for i in frame["impression_id"].unique() if i in set(per["impression_id"])]
    groups = dict(list(frame.groupby("impression_id")))
    for row in per.to_dict("records"):
        g = groups[row["impression_id"]]
        y, s = g["label"].to_numpy(), g["score"].to_numpy()
        assert row["auc"] == pytest.approx(metrics.auc(y, s), abs=1e-12)
        assert row["mrr"] == pytest.approx(metrics.mrr(y, s), abs=1e-12)
        for k in ks:
            assert row[f"ndcg@{k}"] == pytest.approx(metrics.ndcg(y, s, k), abs=1e-12)
            assert row[f"hr@{k}"] == pytest.approx(metrics.hit_rate(y, s, k), abs=1e-12)
            assert row[f"recall@{k}"] == pytest.approx(metrics.recall(y, s, k), abs=1e-12)


def test_hand_computed_ties_hr_and_recall():
    # all five tied, two clicks: P(no click in 2 slots) = C(3,2)/C(5,2) = 3/10
    frame = pd.DataFrame({"impression_id": 7, "label": [1, 1, 0, 0, 0], "score": 0.5})
    row = metrics.impression_metrics(frame, [2, 5]).iloc[0]
    assert row["hr@2"] == pytest.approx(0.7, abs=TOL)
    assert row["recall@2"] == pytest.approx(2 / 5, abs=TOL)  # 2 slots x 2/5 expected clicks each, / 2 clicks
    assert row["hr@5"] == row["recall@5"] == 1.0
    assert row["auc"] == pytest.approx(0.5, abs=TOL)
    assert row["mrr"] == pytest.approx(np.mean(1 / np.arange(1, 6)), abs=TOL)
    # a sure non-click first, then the click tied with two non-clicks over ranks 2..4
    frame = pd.DataFrame({"impression_id": 1, "label": [0, 1, 0, 0], "score": [3.0, 2.0, 2.0, 2.0]})
    row = metrics.impression_metrics(frame, [1, 2, 3]).iloc[0]
    assert (row["hr@1"], row["recall@1"], row["ndcg@1"]) == (0.0, 0.0, 0.0)
    assert row["hr@2"] == pytest.approx(1 / 3, abs=TOL)
    assert row["recall@2"] == pytest.approx(1 / 3, abs=TOL)
    assert row["hr@3"] == pytest.approx(2 / 3, abs=TOL)
    assert row["ndcg@3"] == pytest.approx((1 / log2(3) + 1 / log2(4)) / 3, abs=TOL)
    assert row["mrr"] == pytest.approx((1 / 2 + 1 / 3 + 1 / 4) / 3, abs=TOL)
    assert row["auc"] == pytest.approx((0 + 0.5 + 0.5) / 3, abs=TOL)
    # AUC: click tied with a non-click on top, the other click tied with a non-click below
    frame = pd.DataFrame({"impression_id": 1, "label": [1, 0, 1, 0], "score": [1.0, 1.0, 0.0, 0.0]})
    row = metrics.impression_metrics(frame, [1]).iloc[0]
    assert row["auc"] == pytest.approx((0.5 + 1 + 0 + 0.5) / 4, abs=TOL)
    assert row["hr@1"] == pytest.approx(0.5, abs=TOL)


def test_two_clicks_one_hit_rate_vs_recall():
    # clicks at ranks 1 and 3: HR@2 = 1 (one is in), Recall@2 = 1/2
    frame = pd.DataFrame({"impression_id": "x", "label": [0, 0, 1, 1], "score": [0.8, 0.1, 0.9, 0.5]})
    row = metrics.impression_metrics(frame, [2]).iloc[0]
    assert row["hr@2"] == 1.0
    assert row["recall@2"] == pytest.approx(0.5, abs=TOL)
    assert row["ndcg@2"] == pytest.approx(1 / (1 + 1 / log2(3)), abs=TOL)


def test_skipped_impressions_are_counted_and_unknown_labels_dropped():
    frame = pd.DataFrame(
        {
            "impression_id": ["a", "a", "b", "b", "c", "c", "d", "d", "e", "e", "e", "f", "f"],
            "label": [1, 0, 0, 0, 1, 1, -1, -1, 1, -1, 0, 1, -1],
            "score": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.2, 0.9, 0.1, 0.3, 0.4],
        }
    )
    per = metrics.impression_metrics(frame, [1, 5])
    assert list(per["impression_id"]) == ["a", "e"]
    # b: no click, c: no non-click, d: nothing labelled, f: no non-click once its unknown row is dropped
    assert per.attrs["skipped"] == 4
    e = per.set_index("impression_id").loc["e"]
    assert e["mrr"] == 1.0 and e["hr@1"] == 1.0 and e["auc"] == 1.0  # the unknown row scored 0.9 is gone
    summary = metrics.summarize(per)
    assert summary["impressions"] == 2 and summary["skipped"] == 4
    assert summary["mrr"] == pytest.approx((1 / 2 + 1) / 2)
    assert "skipped" not in metrics.summarize(pd.DataFrame(per.to_dict("list")))  # a frame without the count


def test_missing_labels_count_as_unknown():
    labels = pd.array([1, None, 0], dtype="Int8")
    frame = pd.DataFrame({"impression_id": [1, 1, 1], "label": labels, "score": [0.1, 0.9, 0.5]})
    per = metrics.impression_metrics(frame, [1])
    assert per["mrr"].tolist() == [0.5] and per.attrs["skipped"] == 0


def test_all_impressions_skipped_gives_empty_frame():
    frame = pd.DataFrame({"impression_id": [1, 1, 2], "label": [0, 0, 1], "score": [0.1, 0.2, 0.3]})
    per = metrics.impression_metrics(frame, [3])
    assert per.empty and list(per.columns) == ["impression_id", "auc", "mrr", "ndcg@3", "hr@3", "recall@3"]
    assert per.attrs["skipped"] == 2
    summary = metrics.summarize(per)
    assert summary["impressions"] == 0 and summary["skipped"] == 2


def test_k_larger_than_list_in_frame():
    frame = pd.DataFrame(
        {"impression_id": [5, 5, 5, 9, 9], "label": [0, 1, 0, 1, 0], "score": [0.3, 0.2, 0.1, 0.0, 1.0]}
    )
    per = metrics.impression_metrics(frame, [2, 50]).set_index("impression_id")
    assert per.loc[5, "ndcg@50"] == pytest.approx(1 / log2(3), abs=TOL)
    assert per.loc[9, "ndcg@50"] == pytest.approx(1 / log2(3), abs=TOL)
    assert per.loc[5, "hr@50"] == per.loc[5, "recall@50"] == 1.0
    assert per.loc[9, "hr@2"] == 1.0 and per.loc[5, "hr@2"] == 1.0
    assert per.index.tolist() == [5, 9]  # order of first appearance, dtype kept


def test_signed_zero_and_infinite_scores_on_both_sort_paths():
    for extra in (0.5, 0.1):  # 0.1 is not a float32: the general sort path
        scores = [-0.0, 0.0, np.inf, -np.inf, extra]
        frame = pd.DataFrame({"impression_id": 1, "label": [1, 0, 0, 1, 0], "score": scores})
        row = metrics.impression_metrics(frame, [3]).iloc[0]
        assert row["auc"] == pytest.approx(0.5 / 6, abs=TOL)  # only the zero click's tie with the zero non-click counts
        assert row["hr@3"] == pytest.approx(0.5, abs=TOL)  # the click at 0 is tied with a non-click over ranks 3..4
        assert row["mrr"] == pytest.approx(((1 / 3 + 1 / 4) / 2 + 1 / 5) / 2, abs=TOL)


def test_invalid_inputs_raise():
    frame = pd.DataFrame({"impression_id": [1, 1], "label": [1, 2], "score": [0.1, 0.2]})
    with pytest.raises(ValueError, match="labels"):
        metrics.impression_metrics(frame, [1])
    frame = pd.DataFrame({"impression_id": [1, 1], "label": [1, 0], "score": [np.nan, 0.2]})
    with pytest.raises(ValueError, match="NaN"):
        metrics.impression_metrics(frame, [1])
    with pytest.raises(ValueError, match="positive"):
        metrics.impression_metrics(frame.fillna(0.0), [0])


# ---------------------------------------------------------------- top-k lists and catalogue metrics


def test_top_k_breaks_ties_by_item_id():
    frame = pd.DataFrame(
        {
            "impression_id": ["u2", "u1", "u1", "u1", "u1", "u2"],
            "item_id": ["b", "d", "c", "a", "e", "a"],
            "score": [0.5, 0.9, 0.5, 0.5, 0.1, 0.5],
        }
    )
    top = metrics.top_k(frame, 3)
    assert top.to_dict("list") == {
        "impression_id": ["u2", "u2", "u1", "u1", "u1"],
        "item_id": ["a", "b", "d", "a", "c"],
        "rank": [1, 2, 1, 2, 3],
    }
    assert metrics.top_k(frame.iloc[::-1], 3).equals(top)  # u2 still first; the logged order of ties is irrelevant
    assert len(metrics.top_k(frame, 100)) == len(frame)
    with pytest.raises(ValueError):
        metrics.top_k(frame, 0)


def test_top_k_matches_sorting_on_random_frames():
    frame = random_frame(8, 200, 30, "ties")
    top = metrics.top_k(frame, 5)
    expected = (
        frame.sort_values(["score", "item_id"], ascending=[False, True], kind="stable")
        .groupby("impression_id", sort=False)
        .head(5)
    )
    expected = expected.assign(rank=expected.groupby("impression_id").cumcount() + 1)
    key = ["impression_id", "rank"]
    pd.testing.assert_frame_equal(
        top.sort_values(key).reset_index(drop=True),
        expected[["impression_id", "item_id", "rank"]].sort_values(key).reset_index(drop=True),
        check_dtype=False,
    )


def test_coverage_and_popularity_bias():
    top = pd.DataFrame({"impression_id": [1, 1, 2, 2], "item_id": ["a", "b", "a", "x"], "rank": [1, 2, 1, 2]})
    assert metrics.coverage(top, 10) == pytest.approx(0.3)
    popularity = pd.Series({"a": 10, "b": 5, "c": 5, "d": 0})
    # catalogue sorted [0, 5, 5, 10]: a -> (3 + 0.5) / 4, b -> (1 + 1) / 4, x (unseen, 0) -> 0.5 / 4
    assert metrics.popularity_bias(top, popularity) == pytest.approx((3.5 + 2 + 3.5 + 0.5) / 4 / 4)
    uniform = pd.DataFrame({"impression_id": 1, "item_id": list("abcd"), "rank": [1, 2, 3, 4]})
    assert metrics.popularity_bias(uniform, popularity) == pytest.approx(0.5)
    assert np.isnan(metrics.popularity_bias(top.iloc[:0], popularity))
    with pytest.raises(ValueError):
        metrics.coverage(top, 0)


def test_missing_impression_id_raises():
    frame = pd.DataFrame({"impression_id": ["a", None], "label": [1, 0], "score": [0.1, 0.2]})
    with pytest.raises(ValueError, match="impression_id"):
        metrics.impression_metrics(frame, [1])
