"""Real servers on loopback: `llmrec serve` (uvicorn) under load while the champion moves, and `mlflow models serve`."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
from typer.testing import CliRunner

from llmrec import tracking
from llmrec.cli import app as cli_app
from llmrec.serving import create_app

MODEL = "tt"  # the two-tower model of the shared registry (conftest.serving_registry)
CLIENTS = 4


class Server:
    """llmrec's app under a real uvicorn server on 127.0.0.1, in a thread of this process."""

    def __init__(self, app, port: int) -> None:
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)
        self.url = f"http://127.0.0.1:{port}"

    def __enter__(self) -> "Server":
        self.thread.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.__exit__()
        raise AssertionError("the server did not become healthy within 60 s")

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        assert not self.thread.is_alive(), "uvicorn did not stop"


def cli(*args: str) -> str:
    result = CliRunner().invoke(cli_app, ["--params", "none.yaml", "--set", f"tracking.model_name={MODEL}", *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_promotion_and_rollback_under_load_fail_no_request(serving_registry, monkeypatch, loopback_port):
    """Clients hammer a real server while `llmrec models promote` and `rollback` move the champion."""
    reg = serving_registry
    monkeypatch.chdir(reg.root)  # the CLI finds the registry (mlflow.db) in the working folder
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    v1, v2 = reg.versions[MODEL]
    tracking.promote(MODEL, v1, "start of the test", root=reg.root)
    body = {"history": ["N1", "N2", {"text": "a storm closes every school", "category": "news"}], "candidates": reg.ids[:100], "k": 10}

    answers: list[list[tuple[float, int, str | None]]] = [[] for _ in range(CLIENTS)]  # per client: (time, status, version)
    failures: list[BaseException] = []
    stop = threading.Event()

    def client(n: int, url: str) -> None:
        with httpx.Client(base_url=url, timeout=30) as http:
            while not stop.is_set():
                try:
                    r = http.post("/recommend", json=body)
                    version = r.json()["model"]["version"] if r.status_code == 200 else None
                    answers[n].append((time.monotonic(), r.status_code, version))
                except Exception as exc:  # a dropped connection or a broken body is a failed request
                    failures.append(exc)
                    return

    def wait_until(condition, seconds: float) -> float:
        start = time.monotonic()
        while not condition():
            assert not failures, failures
            assert time.monotonic() - start < seconds, f"not within {seconds} s"
            time.sleep(0.02)
        return time.monotonic() - start

    def answered(version: str, after: float) -> bool:
        return all(any(v == version and t > after for t, _, v in mine) for mine in answers)

    app = create_app(MODEL, poll_seconds=0.2, root=reg.root, device="cpu")
    with Server(app, loopback_port) as server:
        threads = [threading.Thread(target=client, args=(n, server.url)) for n in range(CLIENTS)]
        for t in threads:
            t.start()
        try:
            wait_until(lambda: all(len(mine) >= 5 for mine in answers), 60)
            promoted_at = time.monotonic()
            assert f"v{v1} -> v{v2}" in cli("models", "promote", v2, "--reason", "test")
            wait_until(lambda: answered(v2, promoted_at), 60)  # every client now gets the new version
            rolled_back_at = time.monotonic()
            assert f"v{v2} -> v{v1}" in cli("models", "rollback")
            followed_in = wait_until(lambda: answered(v1, rolled_back_at), 10)
        finally:
            stop.set()
            for t in threads:
                t.join(30)
        assert httpx.get(f"{server.url}/model").json()["version"] == v1

    assert not failures
    flat = [a for mine in answers for a in mine]
    assert {status for _, status, _ in flat} == {200}
    # while v2 was downloaded and loaded in the background, v1 kept answering
    assert any(v == v1 and promoted_at < t for t, _, v in flat if t < rolled_back_at)
    for mine in answers:  # each client saw v1, then v2, then v1 again: one switch each way, no flapping
        runs = [v for i, (_, _, v) in enumerate(mine) if i == 0 or mine[i - 1][2] != v]
        assert runs == [v1, v2, v1], runs
    assert followed_in < 5  # "within seconds": the poll interval plus a swap (v1 is still in memory)


def test_mlflow_models_serve_answers_invocations(serving_registry, loopback_port, tmp_path, monkeypatch):
    """The documented `mlflow models serve -m models:/NAME@champion --env-manager local` path ranks candidates."""
    reg = serving_registry
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    tracking.set_alias(MODEL, "mlflow-serve", reg.versions[MODEL][0], root=reg.root)
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking.tracking_uri(reg.root), "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    command = [str(bin_dir / "mlflow"), "models", "serve", "-m", f"models:/{MODEL}@mlflow-serve", "--env-manager", "local",
               "-h", "127.0.0.1", "-p", str(loopback_port)]
    log = tmp_path / "mlflow-serve.log"
    proc = subprocess.Popen(command, env=env, cwd=reg.root, stdout=log.open("w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{loopback_port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "mlflow models serve did not answer /ping within 120 s"
            try:
                if httpx.get(f"{url}/ping", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        payload = {"dataframe_split": {"columns": ["history", "item_id"], "data": [["N1 N2", "N3"], ["N1 N2", "N4"], ["", "N5"]]}}
        r = httpx.post(f"{url}/invocations", json=payload, timeout=60)
        assert r.status_code == 200, r.text
        predictions = r.json()["predictions"]
        assert [p["item_id"] for p in predictions] == ["N3", "N4", "N5"]
        assert all(isinstance(p["score"], float) for p in predictions)
        assert predictions[0]["score"] != predictions[1]["score"]  # scored per item, not a constant
        bad = httpx.post(f"{url}/invocations", json={"dataframe_split": {"columns": ["nope"], "data": [["x"]]}}, timeout=60)
        assert 400 <= bad.status_code < 500
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:  # pragma: no cover
            proc.kill()
            proc.wait(10)
