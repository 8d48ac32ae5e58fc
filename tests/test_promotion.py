from llmrec.config import PromotionParams
from llmrec.promotion import KEEP, PROMOTE, REJECT, decide

BASE = {"popularity": {"ndcg@10": 0.30}, "random": {"ndcg@10": 0.25}}


def test_first_model_promoted_only_when_it_beats_baselines():
    good = decide({"model": {"ndcg@10": 0.40}, **BASE}, PromotionParams(), challenger_version="1", champion_version=None, drift=None)
    assert good.action == PROMOTE and good.rule == "first-champion-beats-baselines"
    bad = decide({"model": {"ndcg@10": 0.29}, **BASE}, PromotionParams(), challenger_version="1", champion_version=None, drift=None)
    assert bad.action == REJECT
    assert "popularity" in bad.reasons[0]


def test_challenger_must_beat_champion_by_the_margin():
    metrics = {"model": {"ndcg@10": 0.42}, "champion": {"ndcg@10": 0.40}, **BASE}
    drift = {"drift_detected": True, "share_drifted": 0.6, "drifted_features": ["clicked_category"]}
    promoted = decide(metrics, PromotionParams(min_gain=0.01), challenger_version="2", champion_version="1", drift=drift)
    assert promoted.action == PROMOTE and promoted.rule == "challenger-beats-champion"
    assert any("clicked_category" in r for r in promoted.reasons)
    kept = decide(metrics, PromotionParams(min_gain=0.05), challenger_version="2", champion_version="1", drift=drift)
    assert kept.action == KEEP and kept.rule == "champion-holds"


def test_challenger_below_baseline_never_replaces_champion():
    metrics = {"model": {"ndcg@10": 0.28}, "champion": {"ndcg@10": 0.20}, **BASE}
    d = decide(metrics, PromotionParams(), challenger_version="3", champion_version="1", drift=None)
    assert d.action == KEEP and d.rule == "challenger-below-baseline"


def test_gain_within_noise_is_not_promoted():
    metrics = {"model": {"ndcg@10": 0.42}, "champion": {"ndcg@10": 0.41}, **BASE}
    noisy = {"difference": 0.01, "low": -0.02, "high": 0.04, "confidence": 0.95, "impressions": 250}
    d = decide(metrics, PromotionParams(), challenger_version="2", champion_version="1", drift=None, comparison=noisy)
    assert d.action == KEEP and d.rule == "champion-holds"
    assert any("interval" in r for r in d.reasons)
    sure = {**noisy, "low": 0.004}
    d = decide(metrics, PromotionParams(), challenger_version="2", champion_version="1", drift=None, comparison=sure)
    assert d.action == PROMOTE


def test_a_champion_that_was_not_scored_is_never_replaced_unseen():
    d = decide({"model": {"ndcg@10": 0.90}, **BASE}, PromotionParams(), challenger_version="4", champion_version="1", drift=None)
    assert d.action == KEEP and d.rule == "champion-not-evaluated"


def test_unknown_promotion_metric_is_a_config_error():
    import pytest

    from llmrec.config import load_params
    from llmrec.errors import ConfigError

    with pytest.raises(ConfigError, match="ndcg@20"):
        load_params(overrides=["promotion.metric=ndcg@20"])
    assert load_params(overrides=["promotion.metric=ndcg@20", "eval.ks=[10, 20]"]).promotion.metric == "ndcg@20"
