"""End to end: the `retrain` Prefect flow on the tiny data with a tiny BERT, in a real git + DVC repo."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import REPO, dvc

from llmrec.errors import PromotionAlert


@pytest.fixture(scope="module", autouse=True)
def prefect_server(tmp_path_factory):
    """One throwaway Prefect server (fresh sqlite DB, isolated PREFECT_HOME) for these tests."""
    from prefect.settings import PREFECT_HOME, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    with temporary_settings({PREFECT_HOME: str(tmp_path_factory.mktemp("prefect_home"))}):
        with prefect_test_harness(server_startup_timeout=180):
            yield


def write_params(root: Path, backbone: Path) -> None:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["synthetic"]["preset"] = "tiny"
    params["model"].update(backbone=str(backbone), max_length=48)
    params["train"].update(max_steps=60, batch_size=8, lr=1e-3, trainable_layers=0, warmup_ratio=0.05)
    # every baseline but SASRec (trained per evaluation: minutes), and no sampled protocol: a fast story
    params["eval"].update(max_impressions=0, baselines=["popularity", "random", "tfidf", "zero_shot", "itemknn", "ease"],
                          sampled_on_impressions=False)
    params["tracking"]["experiment"] = "e2e"
    (root / "params.yaml").write_text(yaml.safe_dump(params))


def artifacts_of(flow_run_id) -> dict[str, str]:
    """key -> data of the artifacts a flow run published (read back from the Prefect server)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    return {a.key: a.data if isinstance(a.data, str) else json.dumps(a.data) for a in found}


def registered_versions(root: Path) -> list:
    from mlflow import MlflowClient

    if not (root / "mlflow.db").exists():
        return []
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    return client.search_model_versions("name='llmrec'")


def test_retrain_story_two_periods(project, tiny_world, tiny_backbone):
    from mlflow import MlflowClient

    from flows.retrain import retrain

    write_params(project, tiny_backbone)
    data = project / "data" / "synthetic"
    shutil.copytree(tiny_world / "period1", data / "period1")

    first = retrain()
    assert first["validation"]["success"]
    from flows.retrain import STAGES

    assert list(first["seconds"]) == list(STAGES)  # each stage said when it ran and how long it took
    assert first["registered"]["version"] == "1"
    m = first["evaluation"]["metrics"]
    assert set(m) == {"model", "popularity", "random", "tfidf", "zero_shot", "itemknn", "ease"}
    assert Path(first["evaluation"]["report_html"]).is_file()
    assert "Protocol: catalogue" in first["evaluation"]["markdown"]
    assert m["model"]["ndcg@10"] > m["popularity"]["ndcg@10"], first["evaluation"]["markdown"]
    assert first["decision"]["action"] == "promote"
    assert first["drift"]["skipped"].startswith("no champion")

    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    champion = client.get_model_version_by_alias("llmrec", "champion")
    assert str(champion.version) == "1"
    md5_v1 = yaml.safe_load((project / "data.dvc").read_text())["outs"][0]["md5"]
    assert champion.tags["data.dvc_md5"] == md5_v1
    assert len(champion.tags["data.git_revision"]) == 40
    assert champion.tags["decision"] == "promote"
    assert "up to date" in dvc(project, "status")

    shutil.copytree(tiny_world / "period2", data / "period2")
    state = retrain(return_state=True)
    outcome = state.result(raise_on_failure=False)
    if state.is_failed():  # the champion stayed although the data drifted: a failed run, with its summary
        assert isinstance(outcome, PromotionAlert), outcome
        assert "ALERT" in state.message
        second = outcome.summary
    else:
        second = outcome
    assert second["registered"]["version"] == "2"
    assert second["data_version"]["dvc_md5"] != md5_v1  # period 2 is a new data version
    assert "champion" in second["evaluation"]["metrics"]
    vs = second["evaluation"]["comparisons"]["vs_champion"]
    assert vs["low"] <= vs["difference"] <= vs["high"]
    drift = second["drift"]
    assert drift["drift_detected"], drift
    assert drift["champion_version"] == "1"
    assert Path(drift["html_path"]).is_file()
    decision = second["decision"]
    assert decision["champion_version"] == "1"
    assert decision["action"] in {"promote", "keep"}
    assert decision["retrain_needed"] and state.is_failed() == decision["alert"] == (decision["action"] == "keep")
    assert set(decision["intervals"]) >= {"model", "champion"} and decision["drift"]["drifted_features"]
    champion = client.get_model_version_by_alias("llmrec", "champion")
    assert str(champion.version) == ("2" if decision["action"] == "promote" else "1")
    assert client.get_model_version("llmrec", "2").tags["decision"] == decision["action"]
    assert "up to date" in dvc(project, "status")

    # Nothing changed: training is skipped (cached on the data version + its params); evaluation and drift
    # too when the champion stayed, since they were keyed on champion v1 (a promotion made v2 the champion).
    state = retrain(return_state=True)
    outcome = state.result(raise_on_failure=False)
    third = outcome.summary if state.is_failed() else outcome
    kept = decision["action"] == "keep"
    assert third["cached"] == (["train", "evaluate", "drift"] if kept else ["train"])
    assert third["train"]["model_sha"] == second["train"]["model_sha"] and third["registered"]["version"] == "3"
    published = artifacts_of(state.state_details.flow_run_id)
    assert {"retrain-metrics", "retrain-decision", "retrain-report", "mlflow-links"} <= set(published)
    assert f"**Skipped (cached, same data version and params)**: {', '.join(third['cached'])}" in published["retrain-report"]
    assert f"sqlite:///{project / 'mlflow.db'}" in published["mlflow-links"]  # no server: where the store is
    rows = {row["ranker"]: row for row in json.loads(published["retrain-metrics"])}
    assert rows["champion"]["role"] == f"champion v{champion.version}" and rows["popularity"]["role"] == "baseline (must beat)"

    # The registered pyfunc ranks candidates.
    import mlflow
    import pandas as pd

    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    model = mlflow.pyfunc.load_model("models:/llmrec@champion")
    out = model.predict(pd.DataFrame({"history": ["", ""], "item_id": ["N1", "N2"]}))
    assert list(out.columns) == ["item_id", "score"] and len(out) == 2


def test_malformed_data_stops_before_anything_is_registered(project, tiny_world, tiny_backbone):
    from flows.retrain import retrain
    from llmrec.errors import DataError

    write_params(project, tiny_backbone)
    folder = project / "data" / "synthetic" / "period1"
    shutil.copytree(tiny_world / "period1", folder)
    lines = (folder / "behaviors.tsv").read_text().splitlines(keepends=True)
    lines[9] = lines[9].replace("\t", " ", 1)  # a truncated / wrongly separated line 10
    (folder / "behaviors.tsv").write_text("".join(lines))
    with pytest.raises(DataError) as info:
        retrain()
    assert "behaviors.tsv, line 10" in str(info.value)
    assert registered_versions(project) == []


def test_refused_data_fails_the_run_with_the_validation_report(project, tiny_world, tiny_backbone):
    from flows.retrain import retrain
    from llmrec.errors import ValidationFailed

    write_params(project, tiny_backbone)
    folder = project / "data" / "synthetic" / "period1"
    shutil.copytree(tiny_world / "period1", folder)
    lines = (folder / "behaviors.tsv").read_text().splitlines(keepends=True)
    fields = lines[2].rstrip("\n").split("\t")
    fields[4] += " " + fields[4].split()[0]  # parses, but one item is shown twice in one impression
    lines[2] = "\t".join(fields) + "\n"
    (folder / "behaviors.tsv").write_text("".join(lines))
    state = retrain(return_state=True)
    assert state.is_failed() and "ValidationFailed" in state.message, state.message
    assert isinstance(state.result(raise_on_failure=False), ValidationFailed)
    report = artifacts_of(state.state_details.flow_run_id)["retrain-validation"]
    assert "Validation refused the data" in report and "impression_id,item_id" in report
    assert str(project / "outputs/validation/data_docs") in report
    assert registered_versions(project) == []


def test_a_cached_stage_runs_again_when_its_outputs_changed(tmp_path):
    from prefect import flow, task
    from prefect.cache_policies import INPUTS

    from flows.caching import digest, run_cached

    out, calls = tmp_path / "out.txt", []

    @task(cache_policy=INPUTS, result_storage=tmp_path / "results", result_serializer="json", persist_result=True)
    def stage(x: int) -> dict:
        calls.append(x)
        out.write_text(str(x))
        return {"result": x * 2, "files": digest([out])}

    @flow
    def once() -> tuple:
        return run_cached(stage, 21)

    assert once() == (42, False) and once() == (42, True) and len(calls) == 1
    out.write_text("changed by another run")
    assert once() == (42, False) and len(calls) == 2 and out.read_text() == "21"
    assert once() == (42, True)


def test_a_wrong_form_value_fails_the_run_before_any_stage(project):
    from flows.retrain import retrain
    from flows.settings import RetrainSettings

    state = retrain(settings=RetrainSettings(budget="gpu-8h"), return_state=True)
    assert state.is_failed() and "unknown budget 'gpu-8h'" in state.message and "cpu-10min" in state.message, state.message
    assert not (project / "outputs").exists()  # not even ingest ran
