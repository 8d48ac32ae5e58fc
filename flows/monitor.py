"""The `monitor` flow: new batch -> validate -> drift vs the champion's data -> decision -> `retrain` when needed.

Thin wiring over `llmrec.monitoring.run_monitor` (ingest + validate the batch, Evidently drift against
the champion's training data, the monitoring decision) and `add_batch`.

`retrain` runs as a subflow, not through `run_deployment`: the batch is added to data.path on this
machine's checkout, and the retrain run must train on exactly that folder (and version it with DVC
there). A deployment run could start on other infrastructure (another container, another pod)
that does not have the batch. The subflow shows as a child run of the monitor run in the UI.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows import artifacts
from flows.retrain import MINUTE, SERVICE, retrain
from llmrec import monitoring
from llmrec.config import Params, load_params
from llmrec.errors import DataError, ValidationFailed


def newest_batch(batch: str | Path, params: Params) -> Path | None:
    """The batch to judge: `batch` itself when it is one batch folder, else its newest batch folder (name order).

    None when the folder holds no batch yet, or its newest batch was judged already (it is in data.path,
    or the last monitoring record is about it).
    """
    from llmrec.data.ingest import detect_format, find_batches

    folder = Path(batch).resolve()
    if not folder.is_dir():
        raise DataError.at("the batch folder does not exist", folder,
                           fix="create it and put new batch folders there, or point the monitor's `batch` parameter at it")
    if not detect_format(folder, params.data):
        if not any(p.is_dir() and not p.name.startswith(".") for p in folder.iterdir()):
            return None
        folder = find_batches(folder, params.data)[1][-1]
    root = Path(params.data.path).resolve()
    if root in folder.parents or (root / folder.name).exists():
        return None
    last = _last_record(params)
    return None if last and Path(last.get("batch", "")).resolve() == folder else folder


def _last_record(params: Params) -> dict[str, Any] | None:
    """The record run_monitor wrote last (outputs/monitor/monitor.json), if any."""
    import json

    path = Path(params.eval.out).parent / "monitor" / "monitor.json"
    return json.loads(path.read_text()) if path.is_file() else None


@task(name="find-batch", cache_policy=NO_CACHE, timeout_seconds=5 * MINUTE)
def find_batch(batch: str, params_file: str, overrides: list[str]) -> str | None:
    found = newest_batch(batch, load_params(params_file, overrides))
    return str(found) if found else None


@task(name="judge-batch", cache_policy=NO_CACHE, timeout_seconds=60 * MINUTE, **SERVICE)
def judge_batch(batch: str, params_file: str, overrides: list[str]) -> dict[str, Any]:
    return monitoring.run_monitor(load_params(params_file, overrides), batch)


@task(name="add-batch", cache_policy=NO_CACHE, timeout_seconds=30 * MINUTE)
def add_batch(batch: str, params_file: str, overrides: list[str]) -> str:
    return str(monitoring.add_batch(load_params(params_file, overrides), batch))


@flow(name="monitor", log_prints=True)
def monitor(
    batch: str = "incoming",
    retrain_when_needed: bool = True,
    params_file: str = "params.yaml",
    overrides: list[str] = [],  # noqa: B006 - the Prefect form needs a literal default
) -> dict[str, Any]:
    """Judge the newest batch against the champion's data; retrain on it when the decision says so.

    Ends Failed with the reason when the batch cannot be read or fails validation (nothing is added),
    and when the retrain it started fails (e.g. an ALERT from the promotion policy).

    Args:
        batch: A new batch folder, or the folder where batch folders land (its newest one is judged; relative to the project folder).
        retrain_when_needed: On "retrain needed": add the batch to data.path and run `retrain` (as a subflow).
        params_file: The params file (relative to the project folder).
        overrides: Advanced: section.key=value settings, like `llmrec --set`, for monitoring and the retrain.
    """
    logger = get_run_logger()
    found = find_batch(batch, params_file, overrides)
    if found is None:
        logger.info("no new batch in %s: nothing to judge", batch)
        return {"batch": None, "retrain_needed": False, "retrained": None}
    try:
        record = judge_batch(found, params_file, overrides)
    except ValidationFailed as refused:
        artifacts.validation_refused(refused, key="monitor-validation")
        raise
    artifacts.monitor_published(record)
    logger.info("%s", record["decision"]["summary"])
    if not (record["retrain_needed"] and retrain_when_needed):
        return {"batch": found, "retrain_needed": record["retrain_needed"], "decision": record["decision"], "retrained": None}
    added = add_batch(found, params_file, overrides)
    logger.info("retraining with %s", added)
    summary = retrain(params_file=params_file, overrides=overrides)
    return {"batch": found, "retrain_needed": True, "decision": record["decision"], "added": added,
            "retrained": {"version": summary["registered"]["version"], "decision": summary["decision"]["action"]}}
