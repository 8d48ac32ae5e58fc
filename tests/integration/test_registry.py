"""The MLflow registry through llmrec.tracking: versions, champion / previous aliases, rollback."""

import pandas as pd
import pytest

from llmrec import tracking
from llmrec.errors import TrackingError


@pytest.fixture
def registry(tmp_path, monkeypatch, tiny_backbone):
    from llmrec.models.cross_encoder import CrossEncoder
    from llmrec.models.text import TextConfig

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    model_dir = CrossEncoder.from_backbone(tiny_backbone, TextConfig(), 32, str(tiny_backbone), "cpu").save(tmp_path / "model")
    items = tmp_path / "items.parquet"
    pd.DataFrame({"item_id": ["N1", "N2", "N3"], "title": ["a", "b", "c"], "text": "", "category": "x", "subcategory": "y"}).to_parquet(items)
    versions = [
        tracking.register_model(model_dir, items, model_name="m", experiment="e", params={"p": i}, metrics={"ndcg@10": 0.1 * i},
                                tags={"data.dvc_md5": f"md5-{i}"}, step_losses=[1.0, 0.5])
        for i in (1, 2, 3)
    ]
    return tmp_path, [v.version for v in versions]


def test_promote_rollback_and_alias_log(registry):
    root, (v1, v2, v3) = registry
    assert (root / "mlflow.db").is_file()  # the default store is a sqlite file in the project folder
    with pytest.raises(TrackingError, match="nothing to roll back"):
        tracking.rollback("m")
    assert tracking.promote("m", v1, "first") is None
    assert tracking.promote("m", v3, "better") == v1
    assert tracking.get_version("m", alias="previous").version == v1
    assert tracking.rollback("m") == (v3, v1)
    assert tracking.get_version("m", alias="champion").version == v1
    assert tracking.get_version("m", alias="previous").version == v3
    moves = tracking.alias_log("m")
    assert [(m["from"], m["to"], m["reason"]) for m in moves] == [(None, v1, "first"), (v1, v3, "better"), (v3, v1, "rollback")]

    listed = tracking.list_versions("m")
    assert [v.version for v in listed] == [v3, v2, v1]
    assert listed[-1].aliases == ["champion"] and listed[0].aliases == ["previous"]
    assert listed[0].metrics["ndcg_at_10"] == pytest.approx(0.3)
    assert listed[0].tags["data.dvc_md5"] == "md5-3"


def test_logged_model_ranks_candidates(registry):
    import mlflow

    root, (v1, _, _) = registry
    tracking.promote("m", v1, "first")
    mlflow.set_tracking_uri(tracking.tracking_uri(root))
    model = mlflow.pyfunc.load_model("models:/m@champion")
    out = model.predict(pd.DataFrame({"history": ["N1 N2", "N1"], "item_id": ["N3", "N2"]}))
    assert list(out["item_id"]) == ["N3", "N2"] and out["score"].notna().all()
    folder = tracking.download_model_dir("m", v1, root / "dl")
    assert (folder / "model.safetensors").is_file() and (folder / "llmrec.json").is_file()


def test_unknown_model_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(TrackingError, match="no registered model named 'nope'"):
        tracking.list_versions("nope")


def test_default_store_follows_the_project_folder(tmp_path, monkeypatch):
    """mlflow exports MLFLOW_TRACKING_URI when we point it at a project's sqlite store; a second project in the same
    process must still get its own store, and a URI the user sets still wins."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    tracking._client(first)
    assert tracking.tracking_uri(second) == f"sqlite:///{second.resolve() / tracking.DEFAULT_DB}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    assert tracking.tracking_uri(second) == "http://mlflow.example:5000"


def test_models_list_says_when_holdouts_differ(registry):
    """`models list` put nDCGs of different holdouts side by side without saying so."""
    from typer.testing import CliRunner

    from llmrec.cli import app

    root, (v1, v2, v3) = registry
    for version, cutoff in ((v1, "2019-11-13T00:00:00"), (v2, "2019-11-13T00:00:00"), (v3, "2019-11-19T00:00:00")):
        tracking.set_version_tags("m", version, {"data.cutoff": cutoff})
    result = CliRunner().invoke(app, ["--set", "tracking.model_name=m", "models", "list"])
    assert result.exit_code == 0, result.output
    assert "holdout from" in result.output and "2019-11-19 00:00" in result.output and "2019-11-13 00:00" in result.output
    assert "on its own holdout" in result.output and "not comparable" in result.output
    tracking.set_version_tags("m", v3, {"data.cutoff": "2019-11-13T00:00:00"})  # one holdout: nothing to warn about
    assert "not comparable" not in CliRunner().invoke(app, ["--set", "tracking.model_name=m", "models", "list"]).output
