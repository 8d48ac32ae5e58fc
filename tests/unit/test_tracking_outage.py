"""An MLflow server that does not answer: named at once (URL, attempt, wait), retried briefly, then a clear error.

Before, MLflow's own client retried for about six minutes with nothing but urllib3 warnings in the log."""

from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from llmrec import pipeline
from llmrec.config import load_params
from llmrec.errors import TrackingError


def test_an_unreachable_server_is_named_at_once_retried_then_a_clear_error(monkeypatch, caplog, loopback_port):
    uri = f"http://127.0.0.1:{loopback_port}"  # nothing listens there
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    caplog.set_level(logging.WARNING, logger="llmrec.tracking")
    with pytest.raises(TrackingError) as info:
        pipeline.champion_version(load_params("none.yaml", ["tracking.retries=1"]))
    message = str(info.value)
    assert f"MLflow unreachable at {uri}" in message and "after 2 attempts" in message and "make up" in message
    warned = [r.getMessage() for r in caplog.records if r.name == "llmrec.tracking"]
    assert len(warned) == 1 and warned[0].startswith(f"MLflow unreachable at {uri} (") and warned[0].endswith("retry 1/1 in 2 s")


class _HealthOnly(BaseHTTPRequestHandler):
    """Answers /health, then hangs up on every API request: a server that dies between two calls."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path == "/health":
            self.send_response(200)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"OK")
        else:
            self.close_connection = True

    do_POST = do_GET

    def log_message(self, *args) -> None:
        pass


def test_a_server_that_hangs_up_mid_operation_is_a_tracking_error_naming_it(monkeypatch, loopback_port):
    server = ThreadingHTTPServer(("127.0.0.1", loopback_port), _HealthOnly)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    uri = f"http://127.0.0.1:{loopback_port}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    try:
        with pytest.raises(TrackingError) as info:
            pipeline.champion_version(load_params("none.yaml", ["tracking.retries=0"]))
    finally:
        server.shutdown()
        server.server_close()
    assert f"MLflow unreachable at {uri} during get_version" in str(info.value)
