"""Monitoring and the promotion policy on the bundled generator's real period shift.

One story in a real git + DVC project with a real MLflow store (tiny data, tiny BERT, tiny
two-towers), told in order: a weak champion trained on period 1; batches arrive and `run_monitor`
judges them (same distribution, shifted period, invalid); period 2 is added and a well-trained
challenger replaces the champion; a barely-trained one is kept out with an alert.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import init_project
from typer.testing import CliRunner

from llmrec import monitoring, pipeline, tracking
from llmrec.config import Params, load_params
from llmrec.errors import DataError, ValidationFailed

MODEL = "llmrec"


def tiny_overrides(backbone: Path) -> list[str]:
    return [
        f"model.backbone={backbone}", "model.max_length=48", "model.type=two-tower",
        "train.max_steps=1", "train.batch_size=8", "train.lr=1e-3", "train.trainable_layers=0",
        "train.warmup_ratio=0.05", "train.checkpoint_every=0",
        "eval.max_impressions=0", "eval.catalogue_impressions=0", "eval.baselines=[popularity, random]",
        "tracking.experiment=monitor",
    ]


def write_days(source: Path, dest: Path, days: list[str]) -> Path:
    """A MIND batch folder holding only the impressions of the given days (M/D/YYYY) of `source`."""
    dest.mkdir(parents=True)
    lines = (source / "behaviors.tsv").read_text().splitlines(keepends=True)
    kept = [line for line in lines if line.split("\t")[2].split(" ")[0] in days]
    assert kept, f"no impressions on {days} in {source}"
    (dest / "behaviors.tsv").write_text("".join(kept))
    shutil.copy(source / "news.tsv", dest / "news.tsv")
    return dest


def mind_day(line: str) -> str:
    return line.split("\t")[2].split(" ")[0]


def retrain_stages(params: Params) -> dict:
    """The retrain flow's stages, called directly (the flow itself is tested in test_retrain_flow.py)."""
    pipeline.run_ingest(params)
    pipeline.run_validate(params)
    pipeline.run_version(params)
    pipeline.run_train(params, progress=False)
    evaluation = pipeline.run_evaluate(params, progress=False)
    drift = monitoring.run_drift(params)
    registered = pipeline.run_register(params)
    decision = pipeline.run_promote(params, registered, drift)
    return {"evaluation": evaluation, "drift": drift, "registered": registered, "decision": decision}


@pytest.fixture(scope="module")
def story(tmp_path_factory, tiny_world: Path, tiny_backbone: Path, one_thread):
    """A project whose champion v1 is a 1-step two-tower trained on period 1 (promoted by hand)."""
    tmp = tmp_path_factory.mktemp("monitor")
    root = init_project(tmp / "project", code=False)
    shutil.copytree(tiny_world / "period1", root / "data" / "synthetic" / "period1")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        overrides = tiny_overrides(tiny_backbone)
        params = load_params("params.yaml", overrides)
        pipeline.run_ingest(params)
        pipeline.run_validate(params)
        pipeline.run_version(params)
        pipeline.run_train(params, progress=False)
        pipeline.run_evaluate(params, with_champion=False, progress=False)
        first = pipeline.run_register(params)
        tracking.promote(MODEL, first["version"], "bootstrap: a weak first champion for the policy tests")
        days = sorted({mind_day(line) for line in (tiny_world / "period1" / "behaviors.tsv").read_text().splitlines()},
                      key=lambda d: tuple(int(x) for x in d.split("/")[::-1]))
        yield SimpleNamespace(root=root, tmp=tmp, params=params, overrides=overrides, world=tiny_world, days=days)


def champion_version() -> str | None:
    info = tracking.get_version(MODEL, alias=tracking.CHAMPION)
    return info.version if info else None


def test_same_distribution_batch_means_no_action(story) -> None:
    # the champion learnt from period 1 up to its last day; that last day (its holdout) arrives as a batch
    batch = write_days(story.world / "period1", story.tmp / "same" / "day4", story.days[-1:])
    record = monitoring.run_monitor(story.params, batch)
    drift = record["drift"]
    assert not drift["drift_detected"], drift["summary"]
    assert drift["share_drifted"] < 0.5 and not drift["signals"]["embedding"], drift["summary"]
    # the champion's scores are compared (one candidate per impression) and reported; by default they
    # do not decide: they move with history length, which grows in any log (see README)
    assert drift["prediction"]["n_reference"] == 360 and drift["prediction"]["n_current"] == 120
    assert drift["decide_on"] == ["features", "embedding"]
    assert record["decision"]["action"] == "no action" and record["decision"]["rule"] == "no-drift"
    assert record["retrain_needed"] is False
    json.dumps(record, allow_nan=False)  # JSON-able as is: a flow can return it
    saved = json.loads(Path("outputs/monitor/monitor.json").read_text())
    assert saved["decision"]["action"] == "no action" and saved["champion_version"] == "1"
    assert tracking.get_version(MODEL, version="1").tags["monitor.last"].endswith("no action")


def test_shifted_period_means_retrain_needed(story) -> None:
    record = monitoring.run_monitor(story.params, story.world / "period2")
    drift = record["drift"]
    assert drift["drift_detected"] and drift["signals"]["features"], drift["summary"]
    # what the generator shifts in period 2: more candidates per impression, a new topic and moved
    # preferences (category and subcategory mix), and mostly new items
    assert {"n_candidates", "clicked_category", "clicked_subcategory", "unseen_items"} <= set(drift["drifted_features"])
    assert "hour" not in drift["drifted_features"]  # the generator's time-of-day curve does not change
    assert record["decision"] == {**record["decision"], "action": "retrain needed", "rule": "drift-detected", "retrain_needed": True}
    assert "n_candidates" in record["decision"]["drift"]["drifted_features"]
    for html in ("drift.html", "drift_predictions.html"):
        assert Path("outputs/monitor/drift", html).stat().st_size > 10_000
    assert champion_version() == "1"  # monitoring alone never moves the alias


@pytest.mark.parametrize("fault", ["repeated candidate (validation)", "clicks on unknown items (loading)"])
def test_invalid_batch_moves_nothing(story, fault: str) -> None:
    batch = story.tmp / fault.split()[0]
    shutil.copytree(story.world / "period2", batch)
    if fault.startswith("repeated"):  # parses, but Great Expectations refuses an item shown twice in one impression
        lines = (batch / "behaviors.tsv").read_text().splitlines(keepends=True)
        fields = lines[2].rstrip("\n").split("\t")
        fields[4] += " " + fields[4].split()[0]
        lines[2] = "\t".join(fields) + "\n"
        (batch / "behaviors.tsv").write_text("".join(lines))
        error, words = ValidationFailed, "impression_id,item_id"
    else:  # news.tsv lost rows that the behaviours still show and click
        news = (batch / "news.tsv").read_text().splitlines(keepends=True)
        (batch / "news.tsv").write_text("".join(news[5:]))
        error, words = DataError, "not in news.tsv"
    before = sorted(p.name for p in Path(story.params.data.path).iterdir())
    monitor_json = Path("outputs/monitor/monitor.json")
    stamp = monitor_json.stat().st_mtime_ns
    with pytest.raises(error, match=words):
        monitoring.run_monitor(story.params, batch)
    from llmrec.cli import app

    result = CliRunner().invoke(app, ["monitor", "--batch", str(batch), "--retrain"])
    assert result.exit_code == 1, result.output
    assert f"error: {error.__name__}" in result.output and "Traceback" not in result.output
    assert sorted(p.name for p in Path(story.params.data.path).iterdir()) == before  # not added for retraining
    assert monitor_json.stat().st_mtime_ns == stamp  # no record of a decision on bad data
    assert champion_version() == "1" and [v.version for v in tracking.list_versions(MODEL)] == ["1"]


def add_period2_days(story, name: str, days: slice) -> None:
    """Days of period 2 arrive as one more batch folder of data.path (batches are read in name order)."""
    days2 = sorted({mind_day(line) for line in (story.world / "period2" / "behaviors.tsv").read_text().splitlines()},
                   key=lambda d: tuple(int(x) for x in d.split("/")[::-1]))
    write_days(story.world / "period2", Path(story.params.data.path) / name, days2[days])


@pytest.fixture(scope="module")
def better(story):
    """The first half of period 2 arrives; a challenger trained for 60 steps meets the 1-step champion."""
    add_period2_days(story, "period2a", slice(0, 2))
    params = load_params("params.yaml", [*story.overrides, "train.max_steps=60"])
    return retrain_stages(params)


def test_better_challenger_is_promoted(better) -> None:
    d = better["decision"]
    assert better["drift"]["drift_detected"]
    assert d["action"] == "promote" and d["rule"] == "challenger-beats-champion", d["summary"]
    assert d["comparison"]["low"] > 0 and not d["alert"]
    assert set(d["intervals"]) >= {"model", "champion"}
    assert champion_version() == "2" and tracking.get_version(MODEL, alias=tracking.PREVIOUS).version == "1"
    # the record names the drifted features, both models' metrics with intervals and the rule
    assert {"n_candidates", "clicked_category"} <= set(d["drift"]["drifted_features"])
    assert "rule: challenger-beats-champion" in d["summary"] and "[" in d["reasons"][0]


def test_worse_challenger_is_kept_out_with_an_alert(better, story) -> None:
    from llmrec.cli import app

    add_period2_days(story, "period2b", slice(2, None))  # the rest of period 2 arrives
    params = load_params("params.yaml", [*story.overrides, "train.max_steps=1", "train.seed=5"])
    worse = retrain_stages(params)
    d = worse["decision"]
    assert worse["drift"]["drift_detected"], worse["drift"]["summary"]
    assert d["action"] == "keep" and d["rule"] in {"champion-holds", "challenger-below-baseline"}, d["summary"]
    assert d["alert"] and "champion v2" in d["alert_message"]
    assert d["retrain_needed"] and d["comparison"]["low"] <= 0
    assert champion_version() == "2"
    tags = tracking.get_version(MODEL, version="3").tags
    assert tags["decision"] == "keep" and tags["decision.alert"] == "true"
    saved = json.loads(Path("outputs/decision.json").read_text())
    assert saved["alert"] and saved["rule"] == d["rule"]
    # the CLI turns the alert into a failing exit code (the decision is recorded again, unchanged)
    result = CliRunner().invoke(app, [*sum((["--set", o] for o in story.overrides), []), "promote"])
    assert result.exit_code == 1 and "ALERT:" in result.output, result.output
    assert champion_version() == "2"
