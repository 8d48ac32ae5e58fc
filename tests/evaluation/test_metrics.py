import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from llmrec.evaluation import metrics

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
