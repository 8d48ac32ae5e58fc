"""Evaluation protocols, segments, intervals and the report, on the tiny synthetic data and a positive-only log."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from llmrec.data.checks import implicit_impressions
from llmrec.data.context import with_context
from llmrec.data.contract import Dataset, SourceInfo
from llmrec.data.ingest import load_source
from llmrec.data.split import make_split
from llmrec.evaluation import protocols
from llmrec.evaluation.evaluate import evaluate, popularity_scorer, random_scorer, sample_impressions


@pytest.fixture(scope="module")
def mind_setup(tiny_world: Path):
    dataset = load_source(tiny_world).dataset
    split = make_split(dataset, "auto", holdout_days=1)
    holdout = with_context(sample_impressions(split.holdout, 80, seed=1), dataset, 99, seed=1)
    return dataset, split, holdout


def _history_overlap_scorer(frame: pd.DataFrame) -> np.ndarray:
    """A stand-in 'model': category match between candidate and history is not available, so use a hash."""
    return (pd.util.hash_pandas_object(frame["item_id"] + frame["history"].str[:3], index=False).to_numpy() % 1000) / 1000.0


def _run(dataset, split, holdout, seed=3):
    scorers = {"model": _history_overlap_scorer, "popularity": popularity_scorer(split.train), "random": random_scorer(seed)}
    return evaluate(
        holdout, split.train, dataset, scorers, ks=[5, 10], primary="ndcg@10", seed=seed,
        catalogue_scorers=["popularity", "random"], rerankers={"model": ("popularity", 10)}, catalogue_impressions=20,
    )


def test_catalogue_frame_holds_known_items_minus_history(mind_setup) -> None:
    dataset, split, holdout = mind_setup
    frame = protocols.catalogue_frame(holdout, dataset, max_impressions=10, seed=0)
    assert frame["impression_id"].nunique() == 10
    first_seen = dataset.interactions.groupby("item_id")["timestamp"].min()
    when = holdout.impressions.set_index("impression_id")["timestamp"]
    for imp, group in frame.groupby("impression_id"):
        history = set(group["history"].iat[0].split())
        positives = set(holdout.interactions.query("impression_id == @imp and label == 1")["item_id"])
        assert positives == set(group.loc[group["label"] == 1, "item_id"])
        assert not (set(group["item_id"]) - positives) & history
        others = group.loc[group["label"] == 0, "item_id"]
        assert (first_seen[others] < when[imp]).all(), "no item from the future in the catalogue"
        assert len(group) > 50


def test_rerank_puts_the_reranked_head_above_the_rest() -> None:
    frame = pd.DataFrame({"impression_id": ["a"] * 5 + ["b"] * 3, "item_id": list("vwxyzpqr"), "history": ""})
    base = np.array([5.0, 4, 3, 2, 1, 0.3, 0.2, 0.1])
    scores = protocols.rerank_scores(base, frame, top=2, scorer=lambda f: -np.arange(len(f), dtype=float) * 0 + f["item_id"].map({"v": 0.1, "w": 0.9, "p": 0.5, "q": 0.7}).to_numpy())
    a = scores[:5]
    assert a[1] > a[0] > a[2] > a[3] > a[4]  # w over v (re-ranked), then the retriever's order
    b = scores[5:]
    assert b[1] > b[0] > b[2]


def test_report_has_protocols_intervals_segments_and_plots(mind_setup, tmp_path: Path) -> None:
    dataset, split, holdout = mind_setup
    report = _run(dataset, split, holdout)
    assert set(report.protocols) == {"impressions", "catalogue"}
    main = report.protocols["impressions"]
    assert set(main.metrics) == {"model", "popularity", "random"}
    for ranker, ci in main.intervals.items():
        low, high = ci["ndcg@10"]
        assert low <= main.metrics[ranker]["ndcg@10"] <= high
    cat = report.protocols["catalogue"].metrics
    assert "model [popularity top-10]" in cat
    assert cat["popularity"]["pop_bias@10"] > cat["random"]["pop_bias@10"]
    assert 0 < cat["random"]["coverage@10"] <= 1 and cat["popularity"]["coverage@10"] < cat["random"]["coverage@10"]
    assert set(report.segments["kind"]) == {"history length", "positive item", "category"}
    assert report.segments.groupby(["ranker", "kind"])["n"].sum().eq(main.n_impressions).all()
    assert sorted(report.ndcg_curve["k"].unique()) == list(range(1, 21))
    for name, result in report.protocols.items():  # each impression's warm/cold segment, as the warm/cold table counts them
        labels = report.warm_cold_labels[name]
        scored = labels.reindex(result.per_impression["popularity"]["impression_id"])
        assert scored.notna().all() and set(scored) <= {"warm", "cold (unseen in training)"}
        table = report.warm_cold.query("protocol == @name and ranker == 'popularity'").set_index("segment")["n"]
        assert table.to_dict() == scored.value_counts().to_dict()

    from llmrec.evaluation.report import save_report

    paths = save_report(report, tmp_path)
    for name in ("report.md", "report.html", "metrics.json", "plots/ndcg_at_k.png", "plots/segments.png", "plots/scores.png"):
        assert (tmp_path / name).is_file(), name
    md = (tmp_path / "report.md").read_text()
    assert "Protocol: catalogue" in md and "popularity" in md and "plots/segments.png" in md
    html = (tmp_path / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3 and "Protocol: impressions" in html
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["metrics"]["model"]["ndcg@10"] == main.metrics["model"]["ndcg@10"]
    assert paths["html"].name == "report.html"

    import matplotlib
    from matplotlib.patches import Rectangle

    from llmrec.evaluation.report import segment_figure

    matplotlib.use("Agg")
    fig = segment_figure(report)  # the legend covered the first panel's bars
    fig.canvas.draw()
    legend = fig.legends[0].get_window_extent()
    bars = [patch.get_window_extent() for ax in fig.axes for patch in ax.patches if isinstance(patch, Rectangle)]
    assert bars and not any(legend.overlaps(bar) for bar in bars)
    assert {t.get_text() for t in fig.legends[0].get_texts()} == {"model", "popularity", "random"}


def test_same_evaluation_twice_gives_identical_numbers(mind_setup) -> None:
    dataset, split, holdout = mind_setup
    a, b = _run(dataset, split, holdout), _run(dataset, split, holdout)
    for name in a.protocols:
        assert a.protocols[name].metrics == b.protocols[name].metrics
        assert a.protocols[name].intervals == b.protocols[name].intervals


def test_positive_only_log_uses_the_sampled_protocol_with_fixed_negatives() -> None:
    rng = np.random.default_rng(0)
    events = pd.DataFrame(
        {
            "user_id": [f"u{u}" for u in rng.integers(0, 40, 2000)],
            "item_id": [f"i{i}" for i in rng.zipf(1.5, 2000) % 150],
            "timestamp": pd.Timestamp("2020-01-01", tz="UTC") + pd.to_timedelta(rng.integers(0, 10**7, 2000), unit="s"),
        }
    ).drop_duplicates(["user_id", "item_id"])
    imps, inter = implicit_impressions(events)
    items = pd.DataFrame({"item_id": [f"i{i}" for i in range(150)], "title": "t", "text": "", "category": "c", "subcategory": ""})
    log = Dataset(items, imps, inter, SourceInfo("tables", explicit_history=False, logged_negatives=False))
    split = make_split(log, "auto", holdout_days=1)
    holdout = with_context(sample_impressions(split.holdout, 0, seed=0), log, 20, seed=5)
    again = with_context(sample_impressions(split.holdout, 0, seed=0), log, 20, seed=5)
    assert holdout.interactions.equals(again.interactions)
    report = evaluate(holdout, split.train, log, {"popularity": popularity_scorer(split.train), "random": random_scorer(1)},
                      ks=[10], primary="ndcg@10", seed=0)
    assert list(report.protocols) == ["sampled"]
    assert report.metrics["popularity"]["ndcg@10"] > report.metrics["random"]["ndcg@10"]
    assert report.protocols["sampled"].n_impressions == len(holdout.impressions)


def test_catalogue_protocol_excludes_every_earlier_consumption_not_only_the_history_window() -> None:
    from llmrec.data.context import HISTORY_KEEP
    from llmrec.data.split import leave_last_out_split

    t0 = pd.Timestamp("2020-01-01", tz="UTC")
    long_user = [("long", f"i{k}", t0 + pd.Timedelta(hours=k)) for k in range(HISTORY_KEEP + 30)]
    others = [(f"o{u}", f"i{(u * 7 + k) % 200}", t0 + pd.Timedelta(hours=k, minutes=u)) for u in range(30) for k in range(5)]
    others += [("o0", f"i{k}", t0 - pd.Timedelta(minutes=k)) for k in range(200)]  # every item is known before the others
    events = pd.DataFrame(long_user + others, columns=["user_id", "item_id", "timestamp"]).drop_duplicates(["user_id", "item_id"])
    imps, inter = implicit_impressions(events)
    items = pd.DataFrame({"item_id": [f"i{i}" for i in range(200)], "title": "t", "text": "", "category": "c", "subcategory": ""})
    log = Dataset(items, imps, inter, SourceInfo("tables", explicit_history=False, logged_negatives=False))
    split = leave_last_out_split(log)
    holdout = with_context(split.holdout, log, 0, seed=0)
    frame = protocols.catalogue_frame(holdout, log, max_impressions=0, seed=0)
    mine = frame[frame["user_id"] == "long"]
    earlier = {f"i{k}" for k in range(HISTORY_KEEP + 29)}
    window = set(mine["history"].iloc[0].split())
    assert len(window) == HISTORY_KEEP < len(earlier)  # the model reads a window ...
    assert not earlier & set(mine["item_id"])  # ... the ranking excludes every earlier consumption
    assert mine.loc[mine["label"] == 1, "item_id"].tolist() == [f"i{HISTORY_KEEP + 29}"]
    assert len(mine) == 200 - len(earlier)
