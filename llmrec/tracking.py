"""MLflow: runs, the model registry, aliases and lineage tags. The only module importing mlflow.

Why one module this long: the only module importing mlflow (one module per outside system,
docs/architecture.md).
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from llmrec.errors import TrackingError

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous"
DEFAULT_DB = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"


def _mlflow():
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow

    return mlflow


_URI_WE_SET: str | None = None  # mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI; that value is not the user's


@dataclass
class ServerSettings:
    """How llmrec talks to an MLflow server (tracking.timeout_seconds, tracking.retries)."""

    timeout_seconds: float = 60.0
    retries: int = 3


_SERVER = ServerSettings()
_LAST_REACHED: dict[str, float] = {}  # server URI -> when it last answered (monotonic seconds)
REACHED_FOR = 5.0  # a server that answered this recently is not probed again


def configure(timeout_seconds: float, retries: int) -> None:
    """Set the request timeout and the retries (with a warning per retry) for an MLflow server."""
    _SERVER.timeout_seconds, _SERVER.retries = float(timeout_seconds), int(retries)


_ENV_WE_SET: dict[str, str] = {}


def _server_env() -> None:
    """MLflow's own HTTP timeout and retries, short and few (its defaults retry for minutes without a word),
    unless the user set them in the environment."""
    wanted = {
        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(max(1, round(_SERVER.timeout_seconds))),
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    }
    for key, value in wanted.items():
        if os.environ.get(key) in (None, _ENV_WE_SET.get(key)):
            os.environ[key] = _ENV_WE_SET[key] = value


def _unreachable(uri: str, reason: Any, what: str = "") -> TrackingError:
    return TrackingError(
        f"MLflow unreachable at {uri}{what}: {reason}",
        where=uri,
        fix="start the MLflow server (`make up` starts the local one), or point MLFLOW_TRACKING_URI at a running one "
        "(unset it to use the sqlite store in the project folder); then run again",
    )


def wait_until_reachable(uri: str) -> None:
    """Return once the MLflow server at `uri` answers; log each failed attempt (URL, attempt, wait) at once and
    raise TrackingError after `retries` retries. A sqlite/file store needs no server and returns at once."""
    import urllib.error
    import urllib.request

    if not uri.startswith(("http://", "https://")):
        return
    if time.monotonic() - _LAST_REACHED.get(uri, float("-inf")) < REACHED_FOR:
        return
    retries = _SERVER.retries
    for attempt in range(retries + 1):
        try:
            urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=_SERVER.timeout_seconds).close()
            _LAST_REACHED[uri] = time.monotonic()
            return
        except urllib.error.HTTPError:  # it answered (an auth proxy, an old server without /health)
            _LAST_REACHED[uri] = time.monotonic()
            return
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
        if attempt == retries:
            raise _unreachable(uri, f"{reason} (after {retries + 1} attempts)")
        delay = 2 ** (attempt + 1)
        log.warning("MLflow unreachable at %s (%s): retry %d/%d in %d s", uri, reason, attempt + 1, retries, delay)
        time.sleep(delay)


def tracking_uri(root: str | Path = ".") -> str:
    """MLFLOW_TRACKING_URI when set, else a sqlite store in the project folder (the registry needs a DB)."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env and env != _URI_WE_SET:
        return env
    return f"sqlite:///{Path(root).resolve() / DEFAULT_DB}"


_CONNECTION_ERRORS = ("ConnectionError", "ConnectTimeout", "ReadTimeout", "Timeout", "MaxRetryError", "NewConnectionError",
                      "RemoteDisconnected", "ProtocolError")


def _is_connection_error(exc: BaseException) -> bool:
    """A failure to reach the server (refused, reset, timed out), however deep MLflow wrapped it."""
    seen: BaseException | None = exc
    while seen is not None:
        if type(seen).__name__ in _CONNECTION_ERRORS or isinstance(seen, (ConnectionError, TimeoutError)):
            return True
        text = str(seen)
        if "Max retries exceeded" in text or "Connection refused" in text or "Connection aborted" in text:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _service(fn: Any) -> Any:
    """A public operation: a server that stops answering half-way is a TrackingError naming its URL, not a traceback."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except TrackingError:
            raise
        except Exception as exc:
            if not _is_connection_error(exc):
                raise
            reason = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            raise _unreachable(tracking_uri(kwargs.get("root", ".")), reason, f" during {fn.__name__}") from exc

    return wrapper


def _client(root: str | Path = "."):
    global _URI_WE_SET
    mlflow = _mlflow()
    uri = tracking_uri(root)
    _server_env()
    wait_until_reachable(uri)
    chosen_by_user = os.environ.get("MLFLOW_TRACKING_URI") == uri
    mlflow.set_tracking_uri(uri)
    if not chosen_by_user:
        _URI_WE_SET = uri
    return mlflow, mlflow.MlflowClient(tracking_uri=uri)


def _experiment_id(client: Any, name: str, root: str | Path) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = None
    if tracking_uri(root).startswith("sqlite:"):
        location = (Path(root).resolve() / ARTIFACTS_DIR / name).as_uri()
    return client.create_experiment(name, artifact_location=location)


class RankerModel:
    """mlflow.pyfunc model: input columns `history` (space-separated item ids) and `item_id`; output `score`."""

    def load_context(self, context: Any) -> None:
        from llmrec.models.ranker import load_ranker, ranker_scorer

        self.ranker = load_ranker(context.artifacts["model_dir"], device="cpu")
        self.items = pd.read_parquet(context.artifacts["items"])
        self.scorer = ranker_scorer(self.ranker, self.items, batch_size=64)

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        frame = model_input[["history", "item_id"]].astype(str)
        scores = self.scorer(frame)
        return pd.DataFrame({"item_id": frame["item_id"].to_numpy(), "score": scores})


def _pyfunc_class():
    """RankerModel as an mlflow.pyfunc.PythonModel subclass, built lazily so importing llmrec stays light."""
    mlflow = _mlflow()
    return type("LlmrecRanker", (RankerModel, mlflow.pyfunc.PythonModel), {"__module__": __name__})


@dataclass
class RegisteredVersion:
    name: str
    version: str
    run_id: str
    model_uri: str

    def to_dict(self) -> dict:
        return asdict(self)


@_service
def register_model(
    model_dir: str | Path,
    items_path: str | Path,
    *,
    model_name: str,
    experiment: str,
    params: dict[str, Any],
    metrics: dict[str, float],
    tags: dict[str, str],
    step_losses: list[float] | None = None,
    artifacts: list[str | Path] | None = None,
    root: str | Path = ".",
) -> RegisteredVersion:
    """Log a run with params, metrics, curves and reports, log the pyfunc model and register a version."""
    mlflow, client = _client(root)
    exp_id = _experiment_id(client, experiment, root)
    from mlflow.entities import Metric
    from mlflow.models import infer_signature

    run = client.create_run(exp_id, tags={"mlflow.runName": tags.get("run_name", "retrain")})
    run_id = run.info.run_id
    try:
        client.log_batch(run_id, params=[_param(k, v) for k, v in params.items()])
        now = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric(metric_key(k), float(v), now, 0) for k, v in metrics.items()])
        curve = [Metric("train_loss", float(loss), now, step) for step, loss in enumerate(step_losses or [])]
        for start in range(0, len(curve), 1000):
            client.log_batch(run_id, metrics=curve[start : start + 1000])
        for key, value in tags.items():
            client.set_tag(run_id, key, value)
        for path in artifacts or []:
            path = Path(path)
            if path.is_dir():
                client.log_artifacts(run_id, str(path), artifact_path=path.name)
            elif path.is_file():
                client.log_artifact(run_id, str(path))
        example = pd.DataFrame({"history": ["N1 N2"], "item_id": ["N3"]})
        output = pd.DataFrame({"item_id": ["N3"], "score": [0.0]})
        # the CloudPickle warning is expected: the pickled object is llmrec's own class, loaded from code_paths
        logging.getLogger("mlflow.pyfunc").setLevel(logging.ERROR)
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=_pyfunc_class()(),
                artifacts={"model_dir": str(model_dir), "items": str(items_path)},
                signature=infer_signature(example, output),
                input_example=example,
                registered_model_name=model_name,
                pip_requirements=_requirements(),
                code_paths=[str(Path(__file__).resolve().parent)],  # the model carries llmrec's code
            )
        client.set_terminated(run_id, "FINISHED")
    except Exception:
        client.set_terminated(run_id, "FAILED")
        raise
    version = str(info.registered_model_version)
    for key, value in tags.items():
        client.set_model_version_tag(model_name, version, key, value)
    client.set_model_version_tag(model_name, version, "run_id", run_id)
    log.info("registered %s version %s (run %s)", model_name, version, run_id)
    return RegisteredVersion(model_name, version, run_id, f"models:/{model_name}/{version}")


def _requirements() -> list[str]:
    """The serving environment, stated instead of inferred (inference re-imports the model: slow)."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for name in ("torch", "transformers", "safetensors", "pandas", "pyarrow", "pyyaml", "pydantic", "mlflow"):
        try:
            out.append(f"{name}=={version(name).split('+')[0]}")
        except PackageNotFoundError:
            out.append(name)
    return out


def metric_key(name: str) -> str:
    """MLflow metric names allow letters, digits, _ - . / and spaces: ndcg@10 -> ndcg_at_10, [..] -> _."""
    return re.sub(r"[^A-Za-z0-9_\-./ ]+", "_", name.replace("@", "_at_")).strip("_ ")


def _param(key: str, value: Any):
    from mlflow.entities import Param

    return Param(key, str(value)[:6000])


@dataclass
class VersionInfo:
    version: str
    run_id: str
    tags: dict[str, str]
    aliases: list[str]
    metrics: dict[str, float]


@_service
def get_version(model_name: str, alias: str | None = None, version: str | None = None, root: str | Path = ".") -> VersionInfo | None:
    """A model version by alias or number; None when the model or alias does not exist."""
    mlflow, client = _client(root)
    from mlflow.exceptions import MlflowException

    try:
        mv = client.get_model_version_by_alias(model_name, alias) if alias else client.get_model_version(model_name, version)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        if _is_connection_error(exc):
            raise
        raise TrackingError(f"the MLflow store did not answer: {exc}", where=tracking_uri(root)) from exc
    run = client.get_run(mv.run_id) if mv.run_id else None
    return VersionInfo(
        version=str(mv.version),
        run_id=mv.run_id or "",
        tags=dict(mv.tags),
        aliases=list(mv.aliases),
        metrics=dict(run.data.metrics) if run else {},
    )


@_service
def download_model_dir(model_name: str, version: str, dest: str | Path, root: str | Path = ".") -> Path:
    """Download the ranker folder (weights, tokenizer, text config) of a model version."""
    import shutil

    import yaml

    mlflow, client = _client(root)
    dest = Path(dest)
    if dest.exists():
        shutil.rmtree(dest)
    served = _served_artifacts(client, model_name, version, root)
    if served is not None:  # stored through an MLflow server that is not in use now: read its artifacts folder
        shutil.copytree(served, dest)
        local = dest
    else:
        local = Path(mlflow.artifacts.download_artifacts(f"models:/{model_name}/{version}", dst_path=str(dest)))
    flavor = yaml.safe_load((local / "MLmodel").read_text()).get("flavors", {}).get("python_function", {})
    relative = flavor.get("artifacts", {}).get("model_dir", {}).get("path")
    if not relative or not (local / relative).is_dir():
        raise TrackingError("model version holds no model_dir artifact", where=f"models:/{model_name}/{version}")
    return local / relative


@_service
def latest_version(model_name: str, root: str | Path = ".") -> str | None:
    """The highest version number of a registered model (None: no version yet)."""
    _, client = _client(root)
    versions = [int(mv.version) for mv in client.search_model_versions(f"name='{model_name}'")]
    return str(max(versions)) if versions else None


@_service
def download_items(model_name: str, version: str, dest: str | Path, root: str | Path = ".") -> Path:
    """Only the catalogue (pyfunc artifact "items") of a model version, not its weights."""
    import shutil

    import yaml

    mlflow, client = _client(root)
    dest = Path(dest)
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    served = _served_artifacts(client, model_name, version, root)
    base = served.as_uri() if served is not None else client.get_model_version_download_uri(model_name, version)
    mlmodel = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"{base}/MLmodel", dst_path=str(dest)))
    flavor = (yaml.safe_load(mlmodel.read_text()) or {}).get("flavors", {}).get("python_function", {})
    relative = flavor.get("artifacts", {}).get("items", {}).get("path")
    if not relative:
        raise TrackingError("model version holds no items artifact", where=f"models:/{model_name}/{version}")
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=f"{base}/{relative}", dst_path=str(dest)))


def _served_artifacts(client: Any, model_name: str, version: str, root: str | Path) -> Path | None:
    """Where a version's files are on this machine when an MLflow server stored them (`mlflow-artifacts:/…`, e.g.
    `make up`'s server, artifacts in <root>/mlartifacts) and no server is in use now; None when MLflow can fetch them.

    Raises TrackingError saying what to start when they are elsewhere (S3, another machine)."""
    uri = tracking_uri(root)
    if uri.startswith(("http://", "https://")):
        return None
    location = client.get_model_version_download_uri(model_name, version)
    if not str(location).startswith("mlflow-artifacts:"):
        return None
    from urllib.parse import urlparse

    local = Path(root).resolve() / ARTIFACTS_DIR / urlparse(str(location)).path.lstrip("/")
    if (local / "MLmodel").is_file():
        return local
    raise TrackingError(
        f"the files of {model_name} version {version} were stored through an MLflow server ({location}), and the "
        f"tracking store in use ({uri}) cannot read them; they are not in {Path(root).resolve() / ARTIFACTS_DIR} either",
        where=f"models:/{model_name}/{version}",
        fix="start that MLflow server (`make up` for the local stack, `make prodlike-up` for the production-like one) "
        "and set MLFLOW_TRACKING_URI to it (e.g. http://127.0.0.1:5000), then run again",
    )


@_service
def set_alias(model_name: str, alias: str, version: str, root: str | Path = ".") -> None:
    _, client = _client(root)
    client.set_registered_model_alias(model_name, alias, version)


@_service
def set_version_tags(model_name: str, version: str, tags: dict[str, str], root: str | Path = ".") -> None:
    _, client = _client(root)
    for key, value in tags.items():
        client.set_model_version_tag(model_name, version, key, str(value))


@_service
def log_run_artifacts(run_id: str, files: list[str | Path], root: str | Path = ".") -> None:
    """Attach more files (decision record, drift report) to an existing run."""
    _, client = _client(root)
    for path in files:
        if Path(path).is_file():
            client.log_artifact(run_id, str(path))


@_service
def log_run_dict(run_id: str, data: dict, name: str, root: str | Path = ".") -> None:
    _, client = _client(root)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_text(json.dumps(data, indent=2, default=str))
        client.log_artifact(run_id, str(path))


ALIAS_LOG_TAG = "alias_log"
ALIAS_LOG_KEEP = 25


@_service
def alias_log(model_name: str, root: str | Path = ".") -> list[dict]:
    """Recent alias moves, newest last (MLflow keeps no history of aliases, so llmrec records it)."""
    _, client = _client(root)
    tags = client.get_registered_model(model_name).tags
    return json.loads(tags.get(ALIAS_LOG_TAG, "[]"))


def _record_move(client: Any, model_name: str, move: dict) -> None:
    tags = client.get_registered_model(model_name).tags
    moves = json.loads(tags.get(ALIAS_LOG_TAG, "[]"))[-(ALIAS_LOG_KEEP - 1) :]
    moves.append({**move, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    client.set_registered_model_tag(model_name, ALIAS_LOG_TAG, json.dumps(moves))


@_service
def promote(model_name: str, version: str, reason: str, root: str | Path = ".") -> str | None:
    """Make `version` the champion; the old champion becomes `previous`. Returns the old champion."""
    _, client = _client(root)
    old = get_version(model_name, alias=CHAMPION, root=root)
    if old is not None and old.version == version:
        return old.version
    if old is not None:
        client.set_registered_model_alias(model_name, PREVIOUS, old.version)
    client.set_registered_model_alias(model_name, CHAMPION, version)
    client.set_model_version_tag(model_name, version, "promoted_reason", reason[:4000])
    _record_move(client, model_name, {"alias": CHAMPION, "from": old.version if old else None, "to": version, "reason": reason[:300]})
    return old.version if old else None


@_service
def rollback(model_name: str, root: str | Path = ".") -> tuple[str, str]:
    """Move `champion` back to `previous` in one step; returns (from_version, to_version).

    The rolled-back version becomes `previous`, so a second rollback undoes the first.
    """
    _, client = _client(root)
    champion = get_version(model_name, alias=CHAMPION, root=root)
    previous = get_version(model_name, alias=PREVIOUS, root=root)
    if champion is None or previous is None:
        raise TrackingError(
            f"nothing to roll back to: model {model_name!r} has no "
            + ("champion" if champion is None else "previous champion"),
            fix="see `llmrec models list`; promote a version explicitly with `llmrec models promote N`",
        )
    client.set_registered_model_alias(model_name, CHAMPION, previous.version)
    client.set_registered_model_alias(model_name, PREVIOUS, champion.version)
    _record_move(client, model_name, {"alias": CHAMPION, "from": champion.version, "to": previous.version, "reason": "rollback"})
    return champion.version, previous.version


@_service
def list_versions(model_name: str, root: str | Path = ".") -> list[VersionInfo]:
    """Every version of the registered model, newest first, with its aliases and holdout metrics."""
    _, client = _client(root)
    from mlflow.exceptions import MlflowException

    try:
        registered = client.get_registered_model(model_name)
    except MlflowException as exc:
        raise TrackingError(
            f"no registered model named {model_name!r} in {tracking_uri(root)}",
            fix="run `llmrec retrain` (or `make demo`) first, or set MLFLOW_TRACKING_URI / tracking.model_name",
        ) from exc
    by_version: dict[str, list[str]] = {}
    for alias, version in (registered.aliases or {}).items():
        by_version.setdefault(str(version), []).append(alias)
    out = []
    for mv in client.search_model_versions(f"name='{model_name}'"):
        run = client.get_run(mv.run_id) if mv.run_id else None
        out.append(
            VersionInfo(
                version=str(mv.version),
                run_id=mv.run_id or "",
                tags=dict(mv.tags),
                aliases=sorted(by_version.get(str(mv.version), [])),
                metrics=dict(run.data.metrics) if run else {},
            )
        )
    return sorted(out, key=lambda v: int(v.version), reverse=True)
