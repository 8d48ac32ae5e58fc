"""`make up` for real: Prefect server, MLflow server and the deployment runner on loopback;
a `retrain` run triggered through the Prefect API with non-default parameters; then `make down`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from conftest import REPO

pytestmark = pytest.mark.e2e
PREFECT_PORT, MLFLOW_PORT = 4391, 5391


def _stack(project: Path, command: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "BIN": str(Path(sys.executable).parent), "PREFECT_PORT": str(PREFECT_PORT), "MLFLOW_PORT": str(MLFLOW_PORT)}
    return subprocess.run(["bash", "infra/local/stack.sh", command], cwd=project, env=env, capture_output=True, text=True, timeout=400)


def test_retrain_deployment_runs_from_the_api(project, tiny_world, tiny_backbone):
    shutil.copytree(REPO / "infra", project / "infra")
    shutil.copytree(tiny_world / "period1", project / "data" / "synthetic" / "period1")
    up = _stack(project, "up")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert "llmrec stack is up" in up.stdout
        overrides = [f"model.backbone={tiny_backbone}", "model.max_length=48", "train.max_steps=20", "train.trainable_layers=0",
                     "train.lr=1e-3", "eval.max_impressions=0", "tracking.experiment=stack"]
        env = {**os.environ, "PREFECT_API_URL": f"http://127.0.0.1:{PREFECT_PORT}/api"}
        run = subprocess.run(
            [str(Path(sys.executable).parent / "prefect"), "deployment", "run", "retrain/retrain",
             "--param", f"overrides={json.dumps(overrides)}", "--watch", "--watch-timeout", "300"],
            cwd=project, env=env, capture_output=True, text=True, timeout=360,
        )
        assert run.returncode == 0 and "Completed" in run.stdout, run.stdout[-3000:] + run.stderr[-3000:]

        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=f"http://127.0.0.1:{MLFLOW_PORT}")
        (version,) = client.search_model_versions("name='llmrec'")
        assert version.tags["data.dvc_md5"].endswith(".dir")
        assert client.get_experiment_by_name("stack") is not None  # the non-default parameter reached the flow

        body = json.dumps({"limit": 5}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{PREFECT_PORT}/api/artifacts/filter", data=body,
                                         headers={"content-type": "application/json"})
        artifacts = json.loads(urllib.request.urlopen(request, timeout=30).read())
        assert any(a["key"] == "retrain-report" and "Holdout evaluation" in a["data"] for a in artifacts)
    finally:
        down = _stack(project, "down")
    assert down.returncode == 0, down.stdout + down.stderr
    status = _stack(project, "status").stdout
    assert status.count("stopped") == 3, status
