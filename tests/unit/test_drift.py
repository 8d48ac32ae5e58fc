"""Evidently drift: the features, the verdict's semantics, and the generator's real period shift."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from llmrec.data.contract import Dataset, SourceInfo
from llmrec.drift import DriftVerdict, Features, drift_report, embedding_drift, impression_features, unseen_shares
from llmrec.errors import ConfigError, DataError

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


def features(n: int, seed: int, shifted: bool = False) -> Features:
    return impression_features(make_dataset(n, seed, **(SHIFT if shifted else {})))


def table(rows: list[tuple], columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=columns)


def at(hhmm: str) -> pd.Timestamp:
    return pd.Timestamp(f"2019-11-10 {hhmm}", tz="UTC")


def test_impression_features_values() -> None:
    items = table(
        [("A", "one two", "x y z", "news", "newsus"), ("B", "one two three four", "", "sports", "golf"),
         ("C", "x", "a b", "news", "newsworld")],
        ["item_id", "title", "text", "category", "subcategory"],
    )
    ts = [at("07:30"), at("23:05")]
    impressions = table([("I1", "U", ts[0], "A C"), ("I2", "U", ts[1], "")], ["impression_id", "user_id", "timestamp", "history"])
    interactions = table(
        [("I1", "U", "B", ts[0], 1), ("I1", "U", "A", ts[0], 1), ("I1", "U", "C", ts[0], 0),
         ("I2", "U", "A", ts[1], -1), ("I2", "U", "B", ts[1], -1)],
        ["impression_id", "user_id", "item_id", "timestamp", "label"],
    ).astype({"label": "int8"})
    f = impression_features(Dataset(items, impressions, interactions))
    assert f.skipped == {}
    assert list(f.frame.index) == ["I1", "I2"]
    row = f.frame.loc["I1"].to_dict()
    assert {k: row[k] for k in row if "item_" not in k} == {
        "history_len": 2, "n_candidates": 3, "ctr": pytest.approx(2 / 3), "clicked_title_len": 3.0,
        "clicked_abstract_len": 1.5, "clicked_category": "sports", "clicked_subcategory": "golf", "hour": 7,
    }
    assert f.frame.loc["I2", "history_len"] == 0 and f.frame.loc["I2", "n_candidates"] == 2 and f.frame.loc["I2", "hour"] == 23
    assert math.isnan(f.frame.loc["I2", "ctr"]) and math.isnan(f.frame.loc["I2", "clicked_title_len"])
    assert f.frame.loc["I2", "clicked_category"] == "none"
    # the log starts at 07:30: age and popularity need 24 h before them, so they are unknown, not 0
    assert f.frame[["clicked_item_age_h", "clicked_item_popularity", "shown_item_age_h"]].isna().all().all()
    assert str(f.frame["history_len"].dtype) == "int64" and str(f.frame["hour"].dtype) == "int64"


def test_item_age_and_popularity_count_only_the_past() -> None:
    items = table(
        [("A", "a", "", "news", "x", pd.NaT), ("B", "b", "", "news", "x", pd.NaT), ("C", "c", "", "news", "x", at("02:00"))],
        ["item_id", "title", "text", "category", "subcategory", "published_at"],
    )
    imps = table([("I1", "U1", at("00:00"), ""), ("I2", "U2", at("01:00"), ""), ("I3", "U3", at("03:00"), "")],
                 ["impression_id", "user_id", "timestamp", "history"])
    inter = table(
        [("I1", "U1", "A", at("00:00"), 1), ("I1", "U1", "B", at("00:00"), 0),
         ("I2", "U2", "A", at("01:00"), 1), ("I2", "U2", "C", at("01:00"), 0),
         ("I3", "U3", "A", at("03:00"), 0), ("I3", "U3", "B", at("03:00"), 1), ("I3", "U3", "C", at("03:00"), 1)],
        ["impression_id", "user_id", "item_id", "timestamp", "label"],
    ).astype({"label": "int8"})
    f = impression_features(Dataset(items, imps, inter), lookback_hours=2.5).frame
    assert f.loc[["I1", "I2"], "clicked_item_age_h"].isna().all()  # less than 2.5 h of log before them
    # I3 clicks B (first shown 00:00: 3 h, capped at 2.5) and C (published_at 02:00 wins over its first showing: 1 h)
    assert f.loc["I3", "clicked_item_age_h"] == pytest.approx((2.5 + 1.0) / 2)
    assert f.loc["I3", "shown_item_age_h"] == pytest.approx((2.5 + 2.5 + 1.0) / 3)
    # clicks in [00:30, 03:00): A once (01:00); B and C none, their own clicks at 03:00 do not count
    assert f.loc["I3", "clicked_item_popularity"] == 0.0
    assert f.loc["I3", "shown_item_popularity"] == pytest.approx(1 / 3)
    with pytest.raises(ConfigError, match="lookback_hours"):
        impression_features(Dataset(items, imps, inter), lookback_hours=0)


def positive_only(n_users: int, seed: int, genres: list[str]) -> Dataset:
    """A MovieLens-like log: every event its own one-candidate impression, label 1, no histories."""
    rng = np.random.default_rng(seed)
    items = pd.DataFrame({"item_id": [f"M{i}" for i in range(30)], "title": [f"Movie {i} (1999)" for i in range(30)],
                          "text": "", "category": [genres[i % len(genres)] for i in range(30)], "subcategory": ""})
    rows = []
    for k in range(400):
        user, item = f"U{rng.integers(n_users)}", f"M{rng.integers(30)}"
        rows.append((f"E{seed}-{k}", user, item, T0 + pd.Timedelta(hours=int(k)), 1))
    inter = pd.DataFrame(rows, columns=["impression_id", "user_id", "item_id", "timestamp", "label"]).astype({"label": "int8"})
    imps = inter[["impression_id", "user_id", "timestamp"]].assign(history="")
    return Dataset(items, imps, inter, SourceInfo("movielens", explicit_history=False, logged_negatives=False))


def test_positive_only_logs_skip_what_they_cannot_define(tmp_path: Path) -> None:
    log = positive_only(20, 0, ["Drama", "Comedy"])
    f = impression_features(log)
    assert set(f.skipped) == {"n_candidates", "ctr", "shown_item_age_h", "shown_item_popularity",
                              "clicked_abstract_len", "clicked_subcategory"}
    assert "positive-only" in f.skipped["ctr"] and f.skipped["clicked_subcategory"] == "the items have no subcategory"
    assert not set(f.skipped) & set(f.frame.columns)
    # derived histories: a user's earlier events (the first event of each user has none)
    first = ~log.impressions.duplicated("user_id")
    assert (f.frame["history_len"].to_numpy()[first.to_numpy()] == 0).all() and f.frame["history_len"].max() > 5
    v = drift_report(f, impression_features(positive_only(20, 1, ["Drama", "Comedy"])), tmp_path)
    assert v.features["ctr"] == {"drifted": False, "score": None, "method": f.skipped["ctr"], "threshold": None}
    assert "clicked_category" in v.features and v.features["clicked_category"]["score"] is not None


@pytest.fixture(scope="module")
def small() -> dict[str, Features]:
    """Below 1000 rows: Evidently scores with p-values."""
    return {"ref": features(400, 1), "same": features(400, 2), "shifted": features(400, 3, shifted=True)}


@pytest.fixture(scope="module")
def large() -> dict[str, Features]:
    """Above 1000 rows: Evidently scores with distances."""
    return {"ref": features(2500, 11), "same": features(2500, 12), "shifted": features(2500, 13, shifted=True)}


def assert_consistent(v: DriftVerdict) -> None:
    scored = [n for n, f in v.features.items() if f["score"] is not None]
    assert v.drifted_features == [name for name, f in v.features.items() if f["drifted"]]
    assert v.share_drifted == pytest.approx(len(v.drifted_features) / len(scored))
    assert v.signals["features"] == (v.share_drifted >= v.threshold)
    assert v.drift_detected == any(v.signals[s] for s in v.decide_on)


@pytest.mark.parametrize("size", ["small", "large"])
def test_same_distribution_has_no_drift(size: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    data = request.getfixturevalue(size)
    v = drift_report(data["ref"], data["same"], tmp_path)
    assert not v.drift_detected, v.summary()
    # a false alarm or two: 11 tests at the 5 % level, and Evidently's chi-square treats the reference
    # shares as exact, so same-distribution samples of 400 flag clicked_category more often than 5 %
    assert len(v.drifted_features) <= 2 and "history_len" not in v.drifted_features, v.summary()
    assert_consistent(v)
    assert (v.n_reference, v.n_current) == (len(data["ref"].frame), len(data["same"].frame))


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


def test_reports_written(small: dict[str, Features], tmp_path: Path) -> None:
    v = drift_report(small["ref"], small["shifted"], tmp_path / "drift")
    assert v.html_path == str(tmp_path / "drift" / "drift.html")
    assert Path(v.html_path).stat().st_size > 10_000
    saved = json.loads((tmp_path / "drift" / "drift.json").read_text())
    assert saved == v.to_dict()
    assert set(saved["features"]["ctr"]) == {"drifted", "score", "method", "threshold"}
    assert saved["features"]["clicked_abstract_len"]["method"] == "the items have no text/abstract"


@pytest.mark.parametrize("side", ["reference", "current"])
def test_empty_input_is_a_data_error(side: str, small: dict[str, Features], tmp_path: Path) -> None:
    frames = {"reference": small["ref"].frame, "current": small["same"].frame}
    frames[side] = frames[side].iloc[:0]
    with pytest.raises(DataError, match=f"{side} data for drift is empty"):
        drift_report(frames["reference"], frames["current"], tmp_path)


def test_features_reject_duplicate_impressions() -> None:
    ds = make_dataset(5, 0)
    ds.impressions = ds.impressions.iloc[[0, 0, 1]]
    with pytest.raises(DataError, match="'I0' is not unique"):
        impression_features(ds)


def test_feature_without_values_and_ignored_features_are_skipped(small: dict[str, Features], tmp_path: Path) -> None:
    current = Features(small["same"].frame.assign(ctr=float("nan")), small["same"].skipped)  # e.g. an unlabeled test split
    v = drift_report(small["ref"], current, tmp_path, ignore=["hour"], decide_on=["features", "prediction"])
    ctr = v.features["ctr"]
    assert ctr["method"].startswith("skipped") and ctr["score"] is None and ctr["drifted"] is False
    assert v.features["hour"]["method"] == "ignored (drift.ignore)"
    assert "ctr" not in v.drifted_features and "n/a" in v.summary()
    assert_consistent(v)
    with pytest.raises(ConfigError, match="drift.decide_on"):
        drift_report(small["ref"], current, tmp_path, decide_on=["vibes"])


# --- the bundled generator's period shift ---------------------------------------------------------


@pytest.fixture(scope="module")
def periods(tiny_world: Path) -> dict[str, Dataset]:
    """Period 1's training days and holdout day, and period 2, as slices of one log."""
    from llmrec.data.ingest import load_source
    from llmrec.data.split import temporal_split, time_slice

    both = load_source(tiny_world).dataset
    split = temporal_split(load_source(tiny_world / "period1").dataset, 1)
    end = split.holdout.impressions["timestamp"].max()
    return {"log": both, "train": time_slice(both, end=split.cutoff), "holdout": time_slice(both, start=split.cutoff, end=end, inclusive_end=True),
            "period2": time_slice(both, start=end)}


def generated_report(periods: dict[str, Dataset], current: str, out: Path) -> DriftVerdict:
    ref, cur = periods["train"], periods[current]
    return drift_report(impression_features(ref, periods["log"]), impression_features(cur, periods["log"]), out,
                        extra=unseen_shares(ref, cur), ignore=["shown_item_age_h", "shown_item_popularity"])


def test_generator_holdout_day_has_no_drift(periods: dict[str, Dataset], tmp_path: Path) -> None:
    v = generated_report(periods, "holdout", tmp_path)
    assert not v.drift_detected and v.share_drifted < 0.5, v.summary()
    assert not {"n_candidates", "ctr", "hour", "unseen_items", "unseen_users"} & set(v.drifted_features), v.summary()
    assert_consistent(v)


def test_generator_period_two_drifts_where_it_was_shifted(periods: dict[str, Dataset], tmp_path: Path) -> None:
    v = generated_report(periods, "period2", tmp_path)
    assert v.drift_detected and v.share_drifted >= 0.5, v.summary()
    # period 2: more candidates per impression, a new topic and moved preferences, mostly new items
    assert {"n_candidates", "clicked_category", "clicked_subcategory", "unseen_items"} <= set(v.drifted_features), v.summary()
    assert "hour" not in v.drifted_features  # the time-of-day curve does not change
    unseen = v.features["unseen_items"]
    assert unseen["threshold"] == pytest.approx(unseen["baseline"] + 0.2) and unseen["score"] > unseen["threshold"]
    assert_consistent(v)


@pytest.fixture(scope="module")
def mid_world(tmp_path_factory) -> Path:
    """The generator larger than `tiny`: enough new items in period 2 (~1100) for the embedding test's power."""
    from llmrec.config import SyntheticSize
    from llmrec.data.synthetic import generate

    out = tmp_path_factory.mktemp("mid") / "synthetic"
    generate(out, SyntheticSize(n_items=2400, n_users=300, days_per_period=3, impressions_per_day=200), seed=7)
    return out


def test_item_text_embeddings_drift_when_esports_appears(mid_world: Path, tiny_backbone: Path, tmp_path: Path, one_thread) -> None:
    """Through the pipeline's drift step, with the zero-shot encoder of the tiny BERT (no champion: no prediction drift)."""
    from llmrec import monitoring
    from llmrec.config import load_params
    from llmrec.data.ingest import load_source
    from llmrec.data.split import temporal_split, time_slice

    params = load_params(tmp_path / "none.yaml", [f"model.backbone={tiny_backbone}"])
    log = load_source(mid_world).dataset
    split = temporal_split(load_source(mid_world / "period1").dataset, 1)
    end = split.holdout.impressions["timestamp"].max()
    train = time_slice(log, end=split.cutoff)
    holdout, period2 = time_slice(log, start=split.cutoff, end=end, inclusive_end=True), time_slice(log, start=end)
    quick = params.model_copy(update={"drift": params.drift.model_copy(update={"embedding_html": False})})
    same = monitoring.drift_between(quick, train, holdout, log, tmp_path / "same")
    shifted = monitoring.drift_between(params, train, period2, log, tmp_path / "shifted")
    assert same["embedding"]["n_current"] < 1000 and shifted["embedding"]["n_current"] == 1000  # new items, sampled
    assert not same["embedding"]["drifted"] and not same["signals"]["embedding"], same["summary"]
    assert shifted["embedding"]["drifted"] and shifted["signals"]["embedding"], shifted["summary"]
    assert shifted["embedding"]["score"] > same["embedding"]["score"]
    assert "item-text embeddings drifted" in " ".join(shifted["reasons"])
    assert shifted["prediction"] is None and Path(shifted["embedding"]["html_path"]).stat().st_size > 10_000
    again = monitoring._embedding_signal(quick, train, period2, log.items, tmp_path / "again")
    assert again["score"] == shifted["embedding"]["score"]  # a seeded sample of items, seeded methods


def test_embedding_drift_methods_and_small_samples() -> None:
    rng = np.random.default_rng(0)
    ref, same = rng.normal(size=(300, 8)), rng.normal(size=(300, 8))
    moved = np.vstack([rng.normal(size=(200, 8)), rng.normal(size=(100, 8)) + 2.0])  # a third of the rows elsewhere
    shifted = rng.normal(size=(300, 8)) + 0.5  # every row a little
    assert not embedding_drift(ref, same)["drifted"]
    assert embedding_drift(ref, moved)["drifted"] and embedding_drift(ref, shifted)["drifted"]
    model = embedding_drift(ref, shifted, method="model")
    assert model["drifted"] and model["score"] > model["threshold"] == 0.55
    assert not embedding_drift(ref, same, method="model")["drifted"]
    assert embedding_drift(ref, moved) == embedding_drift(ref, moved)  # seeded
    few = embedding_drift(ref, moved[:5])
    assert few["drifted"] is False and "too few items" in few["skipped"]
    with pytest.raises(ConfigError, match="embedding drift method"):
        embedding_drift(ref, same, method="ratio")


def test_summary_says_what_evidentlys_page_counts(periods: dict[str, Dataset], tmp_path: Path) -> None:
    """Evidently's page said "6 of 10" drifted columns where the CLI said 7 of 12: llmrec adds unseen users/items."""
    import re

    v = generated_report(periods, "period2", tmp_path)
    scored = [n for n, f in v.features.items() if f["score"] is not None]
    found = re.search(r"Evidently's drift.html compares (\d+) of them, (\d+) drifted; llmrec adds (.+), (\d+) drifted\)", v.summary())
    assert found, v.summary()
    compared, in_report, ours, ours_drifted = int(found[1]), int(found[2]), found[3].split(", "), int(found[4])
    assert ours == ["unseen_users", "unseen_items"] and compared + len(ours) == len(scored)
    assert in_report + ours_drifted == len(v.drifted_features) and f"{len(v.drifted_features)}/{len(scored)} features" in v.summary()
