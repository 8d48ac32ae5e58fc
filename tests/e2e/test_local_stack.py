"""`make up` for real: Prefect server, MLflow server and the runner serving `retrain` and `monitor` on loopback.

Through the Prefect API, as the UI does: the deployments' parameter schemas are typed forms; a
`retrain` run with non-default settings of that form registers a model version with those settings
and publishes its artifacts; a `monitor` run on a drifted batch (the generator's period 2) retrains.
Then `make down`, and no process of the stack (or of its flow runs) may be left."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from conftest import REPO

PREFECT_PORT, MLFLOW_PORT = 8941, 8942
API = f"http://127.0.0.1:{PREFECT_PORT}/api"
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def _stack(project: Path, command: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "BIN": str(Path(sys.executable).parent), "PREFECT_PORT": str(PREFECT_PORT), "MLFLOW_PORT": str(MLFLOW_PORT),
           "OMP_NUM_THREADS": "1"}  # flow runs train a tiny model: one torch thread is much faster on 2 shared cores
    return subprocess.run(["bash", "infra/local/stack.sh", command], cwd=project, env=env, capture_output=True, text=True, timeout=400)


def api(path: str, body: dict | None = None, attempts: int = 6):
    """A call to the Prefect server's REST API; 503 (its database busy on a loaded machine) is retried, as
    Prefect's own client does."""
    request = urllib.request.Request(f"{API}{path}", data=None if body is None else json.dumps(body).encode(),
                                     headers={"content-type": "application/json"}, method="GET" if body is None else "POST")
    for attempt in range(attempts):
        try:
            return json.loads(urllib.request.urlopen(request, timeout=30).read())
        except urllib.error.HTTPError as error:
            if error.code != 503 or attempt == attempts - 1:
                raise
            time.sleep(2 * (attempt + 1))


def run_deployment(name: str, parameters: dict, timeout: float = 420) -> dict:
    """Create a flow run of a deployment (what the UI's Run button does) and wait until it ends."""
    deployment = api(f"/deployments/name/{name}")
    run = api(f"/deployments/{deployment['id']}/create_flow_run", {"parameters": parameters})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = api(f"/flow_runs/{run['id']}")
        if run["state"]["type"] in TERMINAL:
            return run
        time.sleep(2)
    raise AssertionError(f"{name} run {run['id']} still {run['state']['type']} after {timeout} s")


def artifacts_of(flow_run_id: str) -> dict[str, dict]:
    found = api("/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}})
    return {a["key"]: a for a in found}


def leftovers(project: Path) -> list[str]:
    """Processes still working in the project folder or on the stack's ports."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cwd = os.readlink(proc / "cwd")
            args = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if cwd == str(project) or cwd.startswith(f"{project}/") or str(PREFECT_PORT) in args or str(MLFLOW_PORT) in args:
            found.append(f"{proc.name}: {args[:200]}")
    return found


def test_typed_retrain_form_and_a_monitor_that_retrains_on_drift(project, tiny_world, tiny_backbone):
    from mlflow import MlflowClient

    shutil.copytree(REPO / "infra", project / "infra")
    shutil.copytree(tiny_world / "period1", project / "data" / "synthetic" / "period1")
    up = _stack(project, "up")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert "llmrec stack is up" in up.stdout

        # the forms the UI renders: typed fields with descriptions; the monitor's schedule carries its batch folder
        retrain_deployment = api("/deployments/name/retrain/retrain")
        form = retrain_deployment["parameter_openapi_schema"]["definitions"]["RetrainSettings"]["properties"]
        assert form["model_type"]["enum"] == ["from params file", "two-tower", "hybrid", "cross-encoder"]
        assert form["max_steps"]["type"] == "integer" and form["learning_rate"]["type"] == "number"
        assert all(field["description"] for field in form.values())
        monitor_deployment = api("/deployments/name/monitor/monitor")
        (schedule,) = monitor_deployment["schedules"]
        assert schedule["schedule"]["cron"] == "0 6 * * *" and schedule["active"]
        assert schedule["parameters"] == {"batch": "incoming"}

        # retrain from the form with non-default settings (+ the tiny backbone through the advanced overrides)
        overrides = [f"model.backbone={tiny_backbone}", "model.max_length=48", "train.trainable_layers=0",
                     "eval.max_impressions=0", "eval.baselines=[popularity, random]", "eval.sampled_on_impressions=false",
                     "eval.catalogue_impressions=0", "tracking.experiment=stack"]
        settings = {"model_type": "two-tower", "max_steps": 40, "learning_rate": 0.001, "batch_size": 6, "device": "cpu",
                    "must_beat": ["random"]}
        first = run_deployment("retrain/retrain", {"settings": settings, "overrides": overrides})
        assert first["state"]["type"] == "COMPLETED", first["state"]

        client = MlflowClient(tracking_uri=f"http://127.0.0.1:{MLFLOW_PORT}")
        (version,) = client.search_model_versions("name='llmrec'")
        assert version.tags["model.type"] == "two-tower" and version.tags["decision"] == "promote"
        assert version.tags["data.dvc_md5"].endswith(".dir") and version.tags["data.batches"] == "period1"
        run = client.get_run(version.run_id)
        assert {k: run.data.params[k] for k in ("train.max_steps", "train.lr", "train.batch_size", "train.device")} == {
            "train.max_steps": "40", "train.lr": "0.001", "train.batch_size": "6", "train.device": "cpu"}
        assert run.data.params["promotion.must_beat"] == "['random']"
        assert client.get_experiment(run.info.experiment_id).name == "stack"

        published = artifacts_of(first["id"])
        assert {"retrain-metrics", "retrain-decision", "retrain-report", "mlflow-run", "mlflow-model-version"} <= set(published)
        table = json.loads(published["retrain-metrics"]["data"])
        assert table[0]["ranker"] == "model" and {row["ranker"] for row in table} == {"model", "popularity", "random"}
        assert published["retrain-metrics"]["type"] == "table"
        assert published["mlflow-model-version"]["type"] == "markdown"  # a link artifact is stored as [text](link)
        assert published["mlflow-model-version"]["data"].endswith(f"(http://127.0.0.1:{MLFLOW_PORT}/#/models/llmrec/versions/1)")
        assert published["mlflow-run"]["data"].endswith(f"(http://127.0.0.1:{MLFLOW_PORT}/#/runs/{version.run_id})")
        assert "PROMOTE" in published["retrain-decision"]["data"]
        assert "Holdout evaluation" in published["retrain-report"]["data"]
        assert str(project / "outputs/validation/data_docs") in published["retrain-report"]["data"]

        # a drifted batch lands where the monitor looks; its run judges it and retrains on it
        shutil.copytree(tiny_world / "period2", project / "incoming" / "period2")
        watched = run_deployment("monitor/monitor", {"batch": "incoming", "overrides": overrides})
        judged = artifacts_of(watched["id"])["monitor-decision"]["data"]
        assert "RETRAIN NEEDED" in judged and "drift-detected" in judged, judged
        assert (project / "data/synthetic/period2/behaviors.tsv").is_file()  # added to data.path for the retrain
        retrains = api("/flow_runs/filter", {"flows": {"name": {"any_": ["retrain"]}}, "sort": "START_TIME_ASC"})
        assert len(retrains) == 2 and retrains[1]["parent_task_run_id"]  # the second one is the monitor's subflow
        second = client.get_model_version("llmrec", "2")
        assert second.tags["data.batches"] == "period1,period2"
        # the policy may keep the champion (an ALERT fails the retrain and with it the monitor) or promote
        alert = second.tags["decision"] == "keep"
        assert retrains[1]["state"]["type"] == watched["state"]["type"] == ("FAILED" if alert else "COMPLETED"), watched["state"]
        if alert:
            assert "ALERT" in watched["state"]["message"]
    finally:
        down = _stack(project, "down")
    assert down.returncode == 0, down.stdout + down.stderr
    status = _stack(project, "status").stdout
    assert status.count("stopped") == 3, status
    assert leftovers(project) == []
    serves_without_the_stack(project)


def serves_without_the_stack(project: Path) -> None:
    """The stack is down: `llmrec serve` (the project's sqlite store) serves the champion from the artifacts the
    stack's MLflow server stored in mlartifacts/; without them it says what to start (it stayed 503 with
    MLflow's 'the tracking URI must be a valid http or https URI')."""
    import pandas as pd
    from fastapi.testclient import TestClient

    from llmrec.serving import create_app

    ids = pd.read_parquet(project / "outputs" / "prepared" / "items.parquet")["item_id"].tolist()
    stored = project / "mlartifacts"
    stored.rename(project / "elsewhere")
    with TestClient(create_app("llmrec", root=project, poll_seconds=3600, device="cpu")) as client:
        client.app.state.holder.refresh()
        health = client.get("/health")
        assert health.status_code == 503 and "make up" in health.json()["last_error"], health.text
        (project / "elsewhere").rename(stored)
        client.app.state.holder.refresh()
        assert client.get("/health").json()["status"] == "ok"
        reply = client.post("/recommend", json={"history": ids[:2], "candidates": ids[2:8], "k": 3})
        assert reply.status_code == 200 and len(reply.json()["items"]) == 3, reply.text
