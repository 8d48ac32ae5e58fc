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


NO_DRIFT = {"drift_detected": False, "share_drifted": 0.17, "drifted_features": ["history_len"], "reasons": []}
DRIFT = {"drift_detected": True, "share_drifted": 0.67, "drifted_features": ["n_candidates", "clicked_category"],
         "features": {"n_candidates": {"score": 0.63}, "clicked_category": {"score": 0.35}},
         "reasons": ["8/12 features drifted (n_candidates, clicked_category)"], "signals": {"features": True}}
SURE = {"difference": 0.05, "low": 0.02, "high": 0.08, "confidence": 0.95, "impressions": 250}


def test_no_drift_and_a_healthy_champion_means_no_action():
    metrics = {"model": {"ndcg@10": 0.50}, "champion": {"ndcg@10": 0.40}, **BASE}
    d = decide(metrics, PromotionParams(), challenger_version="2", champion_version="1", drift=NO_DRIFT,
               comparison=SURE, champion_registered_value=0.42)
    assert d.action == KEEP and d.rule == "no-drift-champion-healthy" and not d.retrain_needed and not d.alert
    assert any(r.startswith("no action") for r in d.reasons)
    assert any("+0.0500" in r for r in d.reasons)  # the challenger's evidence is still on the record


def test_an_unhealthy_champion_is_judged_even_without_drift():
    metrics = {"model": {"ndcg@10": 0.50}, "champion": {"ndcg@10": 0.40}, **BASE}
    d = decide(metrics, PromotionParams(max_drop=0.05), challenger_version="2", champion_version="1", drift=NO_DRIFT,
               comparison=SURE, champion_registered_value=0.50)
    assert d.action == PROMOTE and d.retrain_needed and any("lost 0.1000 since its registration" in r for r in d.reasons)


def test_drift_and_a_better_challenger_promotes_with_the_full_record():
    metrics = {"model": {"ndcg@10": 0.50}, "champion": {"ndcg@10": 0.45}, **BASE}
    d = decide(metrics, PromotionParams(), challenger_version="2", champion_version="1", drift=DRIFT, comparison=SURE,
               intervals={"model": [0.46, 0.54], "champion": [0.41, 0.49], "popularity": [0.27, 0.33]})
    assert d.action == PROMOTE and d.rule == "challenger-beats-champion" and d.retrain_needed and not d.alert
    record = d.to_dict()
    assert record["drift"]["drifted_features"] == {"n_candidates": 0.63, "clicked_category": 0.35}
    assert record["intervals"]["champion"] == [0.41, 0.49] and record["thresholds"]["promotion"]["min_gain"] == 0.0
    assert "[0.4600, 0.5400]" in d.reasons[0] and "[0.4100, 0.4900]" in " ".join(d.reasons)


def test_drift_and_a_worse_challenger_keeps_the_champion_and_alerts():
    metrics = {"model": {"ndcg@10": 0.42}, "champion": {"ndcg@10": 0.45}, **BASE}
    worse = {**SURE, "difference": -0.03, "low": -0.06, "high": 0.0}
    d = decide(metrics, PromotionParams(), challenger_version="2", champion_version="1", drift=DRIFT, comparison=worse)
    assert d.action == KEEP and d.rule == "champion-holds" and d.alert and d.retrain_needed
    assert "champion v1" in d.alert_message and "ALERT:" in d.summary()
    below = decide({**metrics, "model": {"ndcg@10": 0.20}}, PromotionParams(), challenger_version="2",
                   champion_version="1", drift=DRIFT, comparison=worse)
    assert below.rule == "challenger-below-baseline" and below.alert


def test_validation_failure_moves_nothing_whatever_the_numbers():
    metrics = {"model": {"ndcg@10": 0.90}, "champion": {"ndcg@10": 0.10}, **BASE}
    for champion in ("1", None):
        d = decide(metrics, PromotionParams(), challenger_version="2", champion_version=champion, drift=DRIFT,
                   comparison=SURE, validation_ok=False)
        assert d.action != PROMOTE and d.rule == "validation-failed" and d.alert


def test_a_first_model_below_the_baselines_alerts_that_nothing_is_served():
    d = decide({"model": {"ndcg@10": 0.20}, **BASE}, PromotionParams(), challenger_version="1", champion_version=None, drift=None)
    assert d.action == REJECT and d.alert and "no model is served" in d.alert_message


def test_paired_gain_within_noise_is_not_promoted():
    """A challenger better on average, by less than the noise, stays out: per-impression values through the paired bootstrap."""
    import numpy as np
    import pandas as pd

    from llmrec.evaluation.stats import paired_bootstrap

    rng = np.random.default_rng(3)
    champion = pd.DataFrame({"impression_id": [f"I{i}" for i in range(250)], "ndcg@10": rng.beta(2, 3, 250)})
    # the challenger: the champion's per-impression values, each moved by noise, a hair better on average
    moved = (champion["ndcg@10"] + rng.normal(0.005, 0.1, 250)).clip(0, 1)
    challenger = champion.assign(**{"ndcg@10": moved})
    comparison = paired_bootstrap(challenger, champion, "ndcg@10", seed=0)
    assert comparison["difference"] > 0 > comparison["low"]
    metrics = {"model": {"ndcg@10": float(moved.mean())}, "champion": {"ndcg@10": float(champion["ndcg@10"].mean())},
               "popularity": {"ndcg@10": 0.2}}
    d = decide(metrics, PromotionParams(), challenger_version="2", champion_version="1", drift=DRIFT, comparison=comparison)
    assert d.action == KEEP and d.rule == "champion-holds" and d.alert
    assert metrics["model"]["ndcg@10"] > metrics["champion"]["ndcg@10"]


def test_monitor_decision():
    from llmrec.promotion import monitor_decision

    assert monitor_decision(None, None)["action"] == "retrain needed"
    assert monitor_decision(DRIFT, "1")["rule"] == "drift-detected"
    calm = monitor_decision({**NO_DRIFT, "threshold": 0.5, "decide_on": ["features", "embedding"]}, "1")
    assert calm["action"] == "no action" and not calm["retrain_needed"]


UNDER = {"under_trained": True, "note": "under-trained: stopped by time at step 38 of 1,131, validation still rising"}


def test_an_under_trained_challenger_is_not_promoted_unless_it_wins_anyway():
    strong = {"ease": {"ndcg@10": 0.45}}  # not in must_beat, so the usual rules ignore it
    metrics = {"model": {"ndcg@10": 0.40}, **BASE, **strong}
    usual = decide(metrics, PromotionParams(), challenger_version="1", champion_version=None, drift=None)
    assert usual.action == PROMOTE
    short = decide(metrics, PromotionParams(), challenger_version="1", champion_version=None, drift=None, training=UNDER)
    assert short.action == REJECT and short.rule == "under-trained-challenger" and short.alert
    assert any("stopped by time at step 38 of 1,131" in r for r in short.reasons) and "ease" in short.alert_message
    with_champion = {**metrics, "champion": {"ndcg@10": 0.30}}
    drift = {"drift_detected": True, "share_drifted": 0.6, "drifted_features": ["x"]}
    kept = decide(with_champion, PromotionParams(), challenger_version="2", champion_version="1", drift=drift, training=UNDER)
    assert kept.action == KEEP and kept.rule == "under-trained-challenger"
    winner = {**with_champion, "model": {"ndcg@10": 0.50}}
    anyway = decide(winner, PromotionParams(), challenger_version="2", champion_version="1", drift=drift, training=UNDER)
    assert anyway.action == PROMOTE and anyway.rule == "challenger-beats-champion"
    assert any("wins anyway" in r for r in anyway.reasons) and any("under-trained" in r for r in anyway.reasons)
    done = decide(metrics, PromotionParams(), challenger_version="1", champion_version=None, drift=None,
                  training={"under_trained": False, "note": "completed 500 steps"})
    assert done.action == PROMOTE
