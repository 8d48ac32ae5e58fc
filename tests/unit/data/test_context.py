"""Derived histories and sampled negatives never see the future, and are reproducible."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from llmrec.data.checks import implicit_impressions
from llmrec.data.context import derived_history, history_lengths, sample_negatives, with_context
from llmrec.data.contract import Dataset, SourceInfo

T0 = pd.Timestamp("2020-01-01", tz="UTC")
IMPLICIT = SourceInfo(format="tables", explicit_history=False, logged_negatives=False)


def implicit_log(n_users: int = 30, n_items: int = 60, n_events: int = 900, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    events = pd.DataFrame(
        {
            "user_id": [f"u{u}" for u in rng.integers(0, n_users, n_events)],
            "item_id": [f"i{i}" for i in rng.integers(0, n_items, n_events)],
            "timestamp": T0 + pd.to_timedelta(rng.integers(0, 30 * 24 * 3600, n_events), unit="s"),
        }
    ).drop_duplicates(["user_id", "item_id"])
    imps, inter = implicit_impressions(events)
    items = pd.DataFrame({"item_id": [f"i{i}" for i in range(n_items)], "title": "t", "text": "", "category": "c", "subcategory": ""})
    return Dataset(items, imps, inter, IMPLICIT)


def test_one_impression_per_event_with_stable_ids() -> None:
    log = implicit_log()
    assert len(log.impressions) == len(log.interactions)
    assert log.impressions["impression_id"].is_unique
    assert set(log.interactions["label"]) == {1}
    first = log.interactions.sort_values("timestamp").groupby("user_id").head(1)
    assert first["impression_id"].str.endswith("#0").all()


def test_derived_history_holds_only_earlier_positives_of_the_same_user() -> None:
    log = implicit_log()
    hist = derived_history(log, log.impressions, max_len=1000)
    when = dict(zip(zip(log.interactions["user_id"], log.interactions["item_id"]), log.interactions["timestamp"]))
    checked = 0
    for (user, ts, h) in zip(log.impressions["user_id"], log.impressions["timestamp"], hist):
        for item in h.split():
            assert when[(user, item)] < ts  # strictly before: never the event itself or a later one
            checked += 1
        expected = int(((log.interactions["user_id"] == user) & (log.interactions["timestamp"] < ts)).sum())
        assert len(h.split()) == expected
    assert checked > 1000
    assert (history_lengths(log, log.impressions).to_numpy() == hist.str.split().str.len().to_numpy()).all()


def test_derived_history_keeps_the_most_recent_entries() -> None:
    log = implicit_log()
    full = derived_history(log, log.impressions, max_len=1000)
    short = derived_history(log, log.impressions, max_len=3)
    assert all(s.split() == f.split()[-3:] for s, f in zip(short, full))


def test_negatives_come_from_the_past_and_exclude_the_users_positives() -> None:
    log = implicit_log()
    first_seen = log.interactions.groupby("item_id")["timestamp"].min()
    imps = log.impressions.sample(200, random_state=1)
    neg = sample_negatives(log, imps, n=5, seed=3)
    assert set(neg["label"]) == {0}
    assert (neg.groupby("impression_id").size() <= 5).all()
    assert not neg.duplicated(["impression_id", "item_id"]).any()
    stamp = dict(zip(imps["impression_id"], imps["timestamp"]))
    user = dict(zip(imps["impression_id"], imps["user_id"]))
    pos = log.interactions
    for imp, item in zip(neg["impression_id"], neg["item_id"]):
        assert first_seen[item] < stamp[imp], "a negative must already exist when the impression happens"
        seen = pos[(pos["user_id"] == user[imp]) & (pos["timestamp"] <= stamp[imp])]["item_id"]
        assert item not in set(seen)
    assert neg["timestamp"].map(lambda t: t).equals(neg["impression_id"].map(stamp))


def test_negatives_are_reproducible_and_independent_of_row_order() -> None:
    log = implicit_log()
    imps = log.impressions.tail(100)
    a = sample_negatives(log, imps, n=4, seed=9)
    b = sample_negatives(log, imps.sample(frac=1, random_state=5), n=4, seed=9)
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(sample_negatives(log, imps, n=4, seed=10))


def test_with_context_fills_what_the_source_lacks_and_leaves_mind_alone() -> None:
    log = implicit_log()
    part = log.restrict(log.impressions["impression_id"].tail(50))
    ready = with_context(part, log, negatives=4, seed=0)
    sizes = ready.interactions.groupby("impression_id")["label"].agg(["sum", "size"])
    assert (sizes["sum"] == 1).all() and (sizes["size"] > 1).all()
    assert (ready.impressions["history"] != "").any()
    mind_like = Dataset(part.items, part.impressions, part.interactions, SourceInfo())
    same = with_context(mind_like, log, negatives=4, seed=0)
    assert same.interactions.equals(mind_like.interactions) and same.impressions.equals(mind_like.impressions)


@pytest.mark.parametrize("n", [0, 10_000])
def test_negative_count_is_bounded_by_what_exists(n: int) -> None:
    log = implicit_log(n_items=20)
    neg = sample_negatives(log, log.impressions.head(20), n=n, seed=0)
    assert len(neg) <= 20 * min(n, 20)


def test_leave_last_out_holds_out_each_users_last_event() -> None:
    from llmrec.data.split import make_split

    log = implicit_log()
    split = make_split(log, "auto", holdout_days=1)
    last = log.impressions.sort_values("timestamp").groupby("user_id").tail(1)
    counts = log.impressions.groupby("user_id").size()
    expected = set(last.loc[last["user_id"].map(counts) >= 2, "impression_id"])
    assert set(split.holdout.impressions["impression_id"]) == expected
    assert not set(split.train.impressions["impression_id"]) & expected
    per_user_train_end = split.train.impressions.groupby("user_id")["timestamp"].max()
    held = split.holdout.impressions.set_index("user_id")["timestamp"]
    assert (per_user_train_end.reindex(held.index) <= held).all()  # a user's training events come before their holdout
    mind_like = Dataset(log.items, log.impressions, log.interactions, SourceInfo())
    temporal = make_split(mind_like, "auto", holdout_days=3)
    assert temporal.cutoff == temporal.cutoff.floor("D")  # temporal: whole days
    assert temporal.train.impressions["timestamp"].max() < temporal.cutoff <= temporal.holdout.impressions["timestamp"].min()
