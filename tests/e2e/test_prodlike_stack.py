"""The production-like stack for real: a private PostgreSQL cluster behind Prefect and MLflow, moto's S3
server behind MLflow's artifacts and the DVC remote, all on loopback. The work pools and the retrain
deployments of infra/prefect/prefect.yaml are registered, a process worker runs `retrain` with the tiny
data and backbone, and every store is checked at its source (SQL in Postgres, objects in S3, a fresh
clone's `dvc pull`). Then `down`, and nothing of it may be left running."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from conftest import REPO, dvc, git

PORTS = {"PG_PORT": "8851", "S3_PORT": "8852", "MLFLOW_PORT": "8853", "PREFECT_PORT": "8854"}
BIN = Path(sys.executable).parent


def stack(project: Path, command: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **PORTS, "BIN": str(BIN)}
    return subprocess.run(["bash", "infra/prodlike/stack.sh", command], cwd=project, env=env,
                          capture_output=True, text=True, timeout=400)


def exported(text: str) -> dict[str, str]:
    """The variables of `stack.sh env` (lines of `export A=1 B=2`)."""
    pairs = [word.split("=", 1) for line in text.splitlines() if line.startswith("export ")
             for word in shlex.split(line)[1:]]
    return dict(pairs)


def leftovers(project: Path, pg_base: str) -> list[str]:
    """Processes that belong to this stack: its ports, its project folder or its cluster folder in their command line."""
    ports = re.compile(r"(?<![0-9])(%s)(?![0-9])" % "|".join(PORTS.values()))
    ps = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    lines = [line.strip().split(None, 1) for line in ps.splitlines() if line.strip()]
    return [" ".join(line) for line in lines if len(line) == 2 and int(line[0]) != os.getpid()
            and (str(project) in line[1] or pg_base in line[1] or ports.search(line[1])) and not line[1].startswith("ps ")]


def sql(port: str, database: str, password: str, query: str, *args) -> list[tuple]:
    import psycopg2

    with psycopg2.connect(host="127.0.0.1", port=port, dbname=database, user=database, password=password) as conn:
        with conn.cursor() as cur:
            cur.execute(query, args)
            return cur.fetchall()


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_postgres_and_s3_stack_runs_the_retrain_deployment(project, tiny_world, tiny_backbone):
    for folder in ("infra", "flows"):
        shutil.copytree(REPO / folder, project / folder, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(tiny_world / "period1", project / "data" / "synthetic" / "period1")
    worker = None
    up = stack(project, "up")
    pg_base = (project / ".llmrec/prodlike/run/pgbase").read_text().strip() if up.returncode == 0 else str(project)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert "production-like stack is up" in up.stdout
        env = {**os.environ, **exported(stack(project, "env").stdout), "PYTHONPATH": str(project)}
        assert env["MLFLOW_TRACKING_URI"] == f"http://127.0.0.1:{PORTS['MLFLOW_PORT']}"
        creds = dict(line.split("=", 1) for line in (project / ".llmrec/prodlike/run/credentials.env").read_text().split())

        # the work pools and one retrain deployment per pool, registered from prefect.yaml
        prefect = str(BIN / "prefect")
        run = subprocess.run([sys.executable, "infra/prefect/pools.py"], cwd=project, env=env, capture_output=True, text=True, timeout=120)
        assert run.returncode == 0 and run.stdout.count("created") == 4, run.stdout + run.stderr
        names = ["retrain-process", "retrain-docker", "retrain-k8s", "retrain-k8s-gpu"]
        run = subprocess.run([prefect, "--no-prompt", "deploy", "--prefect-file", "infra/prefect/prefect.yaml",
                              *(arg for n in names for arg in ("-n", n))],
                             cwd=project, env=env, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        request = urllib.request.Request(f"{env['PREFECT_API_URL']}/deployments/filter", data=b"{}",
                                         headers={"content-type": "application/json"})
        deployments = {d["name"]: d for d in json.loads(urllib.request.urlopen(request, timeout=30).read())}
        assert set(deployments) == set(names)
        assert deployments["retrain-k8s-gpu"]["work_pool_name"] == "llmrec-k8s-gpu"
        assert deployments["retrain-k8s-gpu"]["job_variables"]["gpu_count"] == 1

        # a process worker runs the retrain deployment
        worker = subprocess.Popen([prefect, "worker", "start", "--pool", "llmrec-process", "--type", "process"],
                                  cwd=project, env={**env, "PREFECT_WORKER_QUERY_SECONDS": "2"},
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        overrides = [f"model.backbone={tiny_backbone}", "model.max_length=48", "train.max_steps=20", "train.trainable_layers=0",
                     "train.lr=1e-3", "eval.max_impressions=0", "tracking.experiment=prodlike"]
        run = subprocess.run([prefect, "deployment", "run", "retrain/retrain-process", "--param", f"overrides={json.dumps(overrides)}",
                              "--watch", "--watch-timeout", "300"], cwd=project, env=env, capture_output=True, text=True, timeout=360)
        assert run.returncode == 0 and "Completed" in run.stdout, run.stdout[-3000:] + run.stderr[-3000:]

        # MLflow: the version and its lineage, read through the server and straight from Postgres
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
        (version,) = client.search_model_versions("name='llmrec'")
        md5_dir = version.tags["data.dvc_md5"]
        assert md5_dir.endswith(".dir") and version.tags["data.git_revision"] and "outs:" in version.tags["data.dvc_file"]
        rows = sql(PORTS["PG_PORT"], "mlflow", creds["MLFLOW_DB_PASSWORD"],
                   "SELECT v.version, t.value FROM model_versions v JOIN model_version_tags t "
                   "ON t.name = v.name AND t.version = v.version WHERE v.name = 'llmrec' AND t.key = 'data.dvc_md5'")
        assert rows == [(int(version.version), md5_dir)]
        assert sql(PORTS["PG_PORT"], "mlflow", creds["MLFLOW_DB_PASSWORD"],
                   "SELECT name FROM experiments WHERE name = 'prodlike'") == [("prodlike",)]

        # batch lists: the champion's top-k for every user, to Parquet and to a table in the stack's PostgreSQL
        assert env["LLMREC_BATCH_DATABASE_URL"].startswith("postgresql+psycopg2://llmrec:")
        llmrec = [str(BIN / "llmrec"), "--set", "batch.k=3"]
        run = subprocess.run([*llmrec, "models", "promote", str(version.version)], cwd=project, env=env,
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stdout + run.stderr
        run = subprocess.run([*llmrec, "recommend", "--all-users"], cwd=project, env=env, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0 and "and table recommendations" in run.stdout, run.stdout[-3000:] + run.stderr[-3000:]
        import pandas as pd

        lists = pd.read_parquet(project / "outputs" / "recommendations.parquet")
        table = sql(PORTS["PG_PORT"], "llmrec", creds["LLMREC_DB_PASSWORD"],
                    "SELECT user_id, rank, item_id, model_version FROM recommendations ORDER BY user_id, rank")
        assert len(table) == len(lists) == 3 * lists["user_id"].nunique() > 0
        expected = lists.sort_values(["user_id", "rank"])[["user_id", "rank", "item_id", "model_version"]]
        assert table == [tuple(row) for row in expected.itertuples(index=False)]
        assert {row[3] for row in table} == {str(version.version)}

        # S3: the model's files in the MLflow bucket, the data snapshot in the DVC remote's bucket
        import boto3

        s3 = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1")
        keys = lambda bucket: [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)  # noqa: E731
                               for o in page.get("Contents", [])]
        model_id = version.source.removeprefix("models:/")
        mlflow_keys = keys("llmrec-mlflow")
        assert any(k.startswith("artifacts/") and k.endswith(f"{model_id}/artifacts/MLmodel") for k in mlflow_keys), mlflow_keys[:20]
        assert any(k.endswith(".safetensors") for k in mlflow_keys)
        dvc_keys = keys("llmrec-dvc")
        assert f"store/files/md5/{md5_dir[:2]}/{md5_dir[2:]}" in dvc_keys
        assert len(dvc_keys) == 1 + 2  # the .dir listing + news.tsv and behaviors.tsv

        # a fresh clone restores the exact data from the S3 remote
        git(project, "add", "data.dvc", ".gitignore")
        git(project, "commit", "-q", "-m", "data version of the retrain run")
        clone = project.parent / "clone"
        git(project.parent, "clone", "-q", str(project), str(clone))
        shutil.copy(project / ".dvc" / "config.local", clone / ".dvc" / "config.local")
        dvc(clone, "pull", "data.dvc")
        for name in ("news.tsv", "behaviors.tsv"):
            assert md5(clone / "data/synthetic/period1" / name) == md5(project / "data/synthetic/period1" / name)

        # Prefect: the flow run is recorded in Postgres
        runs = sql(PORTS["PG_PORT"], "prefect", creds["PREFECT_DB_PASSWORD"],
                   "SELECT f.name, r.state_type FROM flow_run r JOIN flow f ON f.id = r.flow_id "
                   "JOIN deployment d ON d.id = r.deployment_id WHERE d.name = 'retrain-process'")
        assert runs == [("retrain", "COMPLETED")]
    finally:
        if worker is not None:  # workers go before the server (a worker left without its server can hang)
            os.killpg(worker.pid, signal.SIGTERM)
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait()
        down = stack(project, "down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert "stopped postgres" in down.stdout
    assert all(line.endswith("stopped") for line in stack(project, "status").stdout.strip().splitlines())
    assert leftovers(project, pg_base) == []
    assert not Path(pg_base).exists()
    assert "prodlike" not in dvc(project, "remote", "list")
