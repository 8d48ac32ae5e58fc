import numpy as np
import pandas as pd
import pytest

from llmrec.evaluation.stats import paired_bootstrap


def frames(a, b):
    ids = [f"i{k}" for k in range(len(a))]
    return pd.DataFrame({"impression_id": ids, "auc": a}), pd.DataFrame({"impression_id": ids, "auc": b})


def test_identical_models_have_zero_difference():
    a, b = frames([0.5, 0.7, 0.9], [0.5, 0.7, 0.9])
    out = paired_bootstrap(a, b, "auc")
    assert out["difference"] == 0 and out["low"] == 0 and out["high"] == 0


def test_interval_contains_mean_and_excludes_zero_for_a_clear_win():
    rng = np.random.default_rng(1)
    base = rng.random(400)
    a, b = frames(base + 0.05 + rng.normal(0, 0.01, 400), base)
    out = paired_bootstrap(a, b, "auc", seed=3)
    assert out["low"] < out["difference"] < out["high"]
    assert out["low"] > 0.04 and out["difference"] == pytest.approx(0.05, abs=0.003)
    assert paired_bootstrap(a, b, "auc", seed=3) == out  # seeded: identical numbers


def test_no_shared_impressions_is_an_error():
    a, _ = frames([0.5], [0.5])
    b = pd.DataFrame({"impression_id": ["other"], "auc": [0.1]})
    with pytest.raises(ValueError, match="share no impression"):
        paired_bootstrap(a, b, "auc")
