"""Evidently drift between two periods of impression features."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from llmrec.data.contract import Dataset
from llmrec.drift import DriftVerdict, drift_report, impression_features
from llmrec.errors import DataError

CATEGORIES = ["news", "sports", "finance", "lifestyle"]
T0 = pd.Timestamp("2019-11-10", tz="UTC")


def make_dataset(
    n_impressions: int, seed: int, category_p: tuple = (0.4, 0.3, 0.2, 0.1), mean_history: float = 4.0
) -> Dataset:
    """Synthetic canonical tables over a fixed catalog; the clicked item's category follows `category_p`."""
    n_items = 80
    item_ids = [f"N{i}" for i in range(n_items)]
    item_cat = [CATEGORIES[i % len(CATEGORIES)] for i in range(n_items)]
    titles = [" ".join(["word"] * (3 + (7 * i) % 9)) for i in range(n_items)]
    rng = np.random.default_rng(seed)
    items = pd.DataFrame({"item_id": item_ids, "title": titles, "text": "", "category": item_cat, "subcategory": "x"})
    by_cat = {c: [i for i in range(n_items) if item_cat[i] == c] for c in CATEGORIES}
    imps, rows = [], []
    for j in range(n_impressions):
        imp, user = f"I{j}", f"U{rng.integers(0, 200)}"
        ts = T0 + pd.Timedelta(seconds=int(rng.integers(0, 3 * 86400)))
        history = " ".join(item_ids[k] for k in rng.integers(0, n_items, rng.poisson(mean_history)))
        imps.append((imp, user, ts, history))
        clicked = int(rng.choice(by_cat[CATEGORIES[rng.choice(len(CATEGORIES), p=category_p)]]))
        others = [int(k) for k in rng.choice(n_items, int(rng.integers(4, 12)), replace=False) if k != clicked]
        for pos, k in enumerate([clicked, *others]):
            rows.append((imp, user, item_ids[k], ts, int(pos == 0)))
    impressions = pd.DataFrame(imps, columns=["impression_id", "user_id", "timestamp", "history"])
    interactions = pd.DataFrame(rows, columns=["impression_id", "user_id", "item_id", "timestamp", "label"])
    interactions["label"] = interactions["label"].astype("int8")
    return Dataset(items, impressions, interactions)


SHIFT = {"category_p": (0.05, 0.05, 0.1, 0.8), "mean_history": 12.0}


def features(n: int, seed: int, shifted: bool = False) -> pd.DataFrame:
    return impression_features(make_dataset(n, seed, **(SHIFT if shifted else {})))


def test_impression_features_values() -> None:
    items = pd.DataFrame(
        {"item_id": ["A", "B", "C"], "title": ["one two", "one two three four", "x"], "text": "",
         "category": ["news", "sports", "news"], "subcategory": ""}
    )
    ts = [pd.Timestamp("2019-11-10 07:30", tz="UTC"), pd.Timestamp("2019-11-10 23:05", tz="UTC")]
    impressions = pd.DataFrame(
        {"impression_id": ["I1", "I2"], "user_id": ["U", "U"], "timestamp": ts, "history": ["A C", ""]}
    )
    interactions = pd.DataFrame(
        {"impression_id": ["I1", "I1", "I1", "I2", "I2"], "user_id": "U", "item_id": ["B", "A", "C", "A", "B"],
         "timestamp": [ts[0]] * 3 + [ts[1]] * 2, "label": pd.Series([1, 1, 0, -1, -1], dtype="int8")}
    )
    f = impression_features(Dataset(items, impressions, interactions))
    assert list(f.index) == ["I1", "I2"]
    assert f.loc["I1"].to_dict() == {
        "history_len": 2, "n_candidates": 3, "ctr": pytest.approx(2 / 3), "clicked_title_len": 3.0,
        "clicked_category": "sports", "hour": 7,
    }
    assert f.loc["I2", "history_len"] == 0 and f.loc["I2", "n_candidates"] == 2 and f.loc["I2", "hour"] == 23
    assert math.isnan(f.loc["I2", "ctr"]) and math.isnan(f.loc["I2", "clicked_title_len"])
    assert f.loc["I2", "clicked_category"] == "none"
    assert str(f["history_len"].dtype) == "int64" and str(f["hour"].dtype) == "int64"


@pytest.fixture(scope="module")
def small() -> dict[str, pd.DataFrame]:
    """Below 1000 rows: Evidently scores with p-values."""
    return {"ref": features(400, 1), "same": features(400, 2), "shifted": features(400, 3, shifted=True)}


@pytest.fixture(scope="module")
def large() -> dict[str, pd.DataFrame]:
    """Above 1000 rows: Evidently scores with distances."""
    return {"ref": features(2500, 11), "same": features(2500, 12), "shifted": features(2500, 13, shifted=True)}


def assert_consistent(v: DriftVerdict) -> None:
    assert v.drifted_features == [name for name, f in v.features.items() if f["drifted"]]
    assert v.share_drifted == pytest.approx(len(v.drifted_features) / len(v.features))
    assert v.drift_detected == (v.share_drifted >= v.threshold)


@pytest.mark.parametrize("size", ["small", "large"])
def test_same_distribution_has_no_drift(size: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    data = request.getfixturevalue(size)
    v = drift_report(data["ref"], data["same"], tmp_path)
    assert not v.drift_detected, v.summary()
    # one false alarm is allowed: Evidently's chi-square treats the reference shares as exact,
    # so same-distribution samples of 400 flag clicked_category more often than 5 % of the time
    assert len(v.drifted_features) <= 1 and "history_len" not in v.drifted_features, v.summary()
    assert_consistent(v)
    assert (v.n_reference, v.n_current) == (len(data["ref"]), len(data["same"]))


@pytest.mark.parametrize(("size", "kind"), [("small", "p_value"), ("large", "distance")])
def test_shifted_distribution_drifts(size: str, kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    data = request.getfixturevalue(size)
    v = drift_report(data["ref"], data["shifted"], tmp_path, share_threshold=0.3)
    assert v.drift_detected, v.summary()
    assert {"history_len", "clicked_category"} <= set(v.drifted_features)
    assert_consistent(v)
    cat = v.features["clicked_category"]
    if kind == "p_value":  # small samples: drift means a small p-value
        assert "p_value" in cat["method"] and cat["score"] < cat["threshold"]
    else:  # large samples: drift means a large distance
        assert "distance" in cat["method"] and cat["score"] >= cat["threshold"]
    assert "history_len" in v.summary() and "DRIFT" in v.summary()


def test_reports_written(small: dict[str, pd.DataFrame], tmp_path: Path) -> None:
    v = drift_report(small["ref"], small["shifted"], tmp_path / "drift")
    assert v.html_path == str(tmp_path / "drift" / "drift.html")
    assert Path(v.html_path).stat().st_size > 10_000
    saved = json.loads((tmp_path / "drift" / "drift.json").read_text())
    assert saved == v.to_dict()
    assert set(saved["features"]["ctr"]) == {"drifted", "score", "method", "threshold"}


@pytest.mark.parametrize("side", ["reference", "current"])
def test_empty_input_is_a_data_error(side: str, small: dict[str, pd.DataFrame], tmp_path: Path) -> None:
    frames = {"reference": small["ref"], "current": small["same"]}
    frames[side] = frames[side].iloc[:0]
    with pytest.raises(DataError, match=f"{side} data for drift is empty"):
        drift_report(frames["reference"], frames["current"], tmp_path)


def test_features_reject_duplicate_impressions() -> None:
    ds = make_dataset(5, 0)
    ds.impressions = ds.impressions.iloc[[0, 0, 1]]
    with pytest.raises(DataError, match="'I0' is not unique"):
        impression_features(ds)


def test_feature_without_values_is_skipped(small: dict[str, pd.DataFrame], tmp_path: Path) -> None:
    current = small["same"].assign(ctr=float("nan"))  # e.g. an unlabeled test split
    v = drift_report(small["ref"], current, tmp_path)
    ctr = v.features["ctr"]
    assert ctr["method"].startswith("skipped") and ctr["score"] is None and ctr["drifted"] is False
    assert "ctr" not in v.drifted_features and v.share_drifted <= 1 / 5
    assert "n/a" in v.summary()
