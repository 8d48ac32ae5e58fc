"""The `retrain` flow: ingest -> validate -> version -> train -> evaluate -> drift -> register -> promote.

Thin wiring only: every task is one call into llmrec.pipeline; stages hand over through files under
outputs/ and pass only small dicts (paths, ids, metrics) between tasks. Runs without a server
(Prefect's ephemeral mode, `llmrec retrain`) or against one (PREFECT_API_URL, `make up`).

What the orchestrator adds:
- a typed form (`settings`, flows/settings.py) next to the params file and free-form overrides;
- retries with exponential back-off on the tasks that talk to a service (git/DVC and its remote,
  MLflow), only for failures that can go away (never for bad data, bad params or a wrong model);
- a timeout per task (training's follows train.max_minutes);
- caching of train, evaluate and drift, keyed on the data version + the params each reads
  (flows/caching.py): an unchanged stage is skipped, e.g. when a run is repeated after MLflow was down;
- artifacts in the UI (flows/artifacts.py) and a Failed state that says why: the validation report
  when the data is refused, the ALERT when the promotion policy raises one.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from flows import artifacts
from flows.caching import RESULTS, digest, run_cached, stage_cache
from flows.settings import RetrainSettings, to_overrides
from llmrec import monitoring, pipeline
from llmrec.config import Params, load_params
from llmrec.errors import ConfigError, DataError, ModelError, PromotionAlert, ValidationFailed

MINUTE = 60


def _can_go_away(_task: Any, _task_run: Any, state: Any) -> bool:
    """Retry condition: a service error (connection, lock, 5xx) may pass; bad data, params or models do not."""
    error = state.result(raise_on_failure=False)
    return isinstance(error, BaseException) and not isinstance(error, (ConfigError, DataError, ModelError, PromotionAlert))


SERVICE = {  # tasks that talk to git/DVC (+ its remote) or MLflow: 3 retries after ~5, 10, 20 s
    "retries": 3,
    "retry_delay_seconds": exponential_backoff(backoff_factor=5),
    "retry_jitter_factor": 0.5,
    "retry_condition_fn": _can_go_away,
}
CACHED = {"result_storage": RESULTS, "result_serializer": "json", "persist_result": True}


def _params(params_file: str, overrides: list[str]) -> Params:
    return load_params(params_file, overrides)


@task(name="ingest", cache_policy=NO_CACHE, timeout_seconds=30 * MINUTE)
def ingest(params_file: str, overrides: list[str]) -> dict[str, Any]:
    return pipeline.run_ingest(_params(params_file, overrides))


@task(name="validate", cache_policy=NO_CACHE, timeout_seconds=30 * MINUTE)
def validate(params_file: str, overrides: list[str]) -> dict[str, Any]:
    return pipeline.run_validate(_params(params_file, overrides))


@task(name="version-data", cache_policy=NO_CACHE, timeout_seconds=30 * MINUTE, **SERVICE)
def version(params_file: str, overrides: list[str]) -> dict[str, Any]:
    return pipeline.run_version(_params(params_file, overrides))


@task(name="champion", cache_policy=NO_CACHE, timeout_seconds=5 * MINUTE, **SERVICE)
def champion(params_file: str, overrides: list[str]) -> str | None:
    """The version the `champion` alias points at now (None: no champion yet)."""
    return pipeline.champion_version(_params(params_file, overrides))


@task(name="train", cache_policy=stage_cache("data", "model", "train"), timeout_seconds=12 * 60 * MINUTE, **CACHED)
def train(params_file: str, overrides: list[str], data_md5: str) -> dict[str, Any]:
    params = _params(params_file, overrides)
    return {"result": pipeline.run_train(params), "files": digest([params.train.out])}


@task(
    name="evaluate",
    cache_policy=stage_cache("data", "model", "eval", "promotion.metric", "train.device", "tracking.model_name"),
    timeout_seconds=3 * 60 * MINUTE,
    **CACHED,
    **SERVICE,  # it downloads the champion from MLflow
)
def evaluate(params_file: str, overrides: list[str], data_md5: str, model_sha: str, champion_version: str | None) -> dict[str, Any]:
    params = _params(params_file, overrides)
    out = Path(params.eval.out)
    return {"result": pipeline.run_evaluate(params), "files": digest(out / n for n in ("metrics.json", "report.md", "report.html", "plots"))}


@task(
    name="drift",
    cache_policy=stage_cache("data", "drift", "model.backbone", "tracking.model_name"),
    timeout_seconds=60 * MINUTE,
    **CACHED,
    **SERVICE,  # it reads the champion's tags (and weights) from MLflow
)
def drift(params_file: str, overrides: list[str], data_md5: str, champion_version: str | None) -> dict[str, Any]:
    params = _params(params_file, overrides)
    result = monitoring.run_drift(params)
    return {"result": result, "files": digest([params.drift.out, Path(params.eval.out).parent / "drift_verdict.json"])}


# Retried on service errors only. A retry after MLflow failed half-way through a registration can leave
# one orphan version (no `challenger` alias, no decision tag): the policy only ever judges the version
# that this task returns.
@task(name="register", cache_policy=NO_CACHE, timeout_seconds=30 * MINUTE, **SERVICE)
def register(params_file: str, overrides: list[str]) -> dict[str, Any]:
    return pipeline.run_register(_params(params_file, overrides))


@task(name="promote", cache_policy=NO_CACHE, timeout_seconds=10 * MINUTE, **SERVICE)
def promote(params_file: str, overrides: list[str], registered: dict, drift_verdict: dict) -> dict[str, Any]:
    return pipeline.run_promote(_params(params_file, overrides), registered, drift_verdict)


@task(name="record-pipeline", cache_policy=NO_CACHE, timeout_seconds=10 * MINUTE)
def record_pipeline() -> None:
    from llmrec.versioning import commit_pipeline

    commit_pipeline()


STAGES = ("ingest", "validate", "version-data", "train", "evaluate", "drift", "register", "promote")


class StageClock:
    """Says which stage runs ("stage 4/8: train") and how long each took, for the log and the run's summary."""

    def __init__(self, log: Any) -> None:
        self.log, self.seconds = log, {}

    @contextmanager
    def __call__(self, name: str):
        k = STAGES.index(name) + 1
        self.log(f"stage {k}/{len(STAGES)}: {name} ...")
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(time.perf_counter() - started, 1)
            self.log(f"stage {k}/{len(STAGES)}: {name} took {self.seconds[name]:.0f} s")


def train_timeout(params: Params) -> float:
    """Training's time limit: train.max_minutes + 30 min for loading and saving, else 12 hours."""
    return (params.train.max_minutes + 30) * MINUTE if params.train.max_minutes else 12 * 60 * MINUTE


@flow(name="retrain", log_prints=True)
def retrain(
    params_file: str = "params.yaml",
    overrides: list[str] = [],  # noqa: B006 - the Prefect form needs a literal default
    settings: RetrainSettings = RetrainSettings(),  # noqa: B008 - idem
) -> dict[str, Any]:
    """Retrain the ranker on the current data and let the promotion policy decide on it.

    Ends Failed with the reason when validation refuses the data (the failed expectations and the
    Data Docs path are an artifact) or when the decision raises an ALERT (PromotionAlert, carrying
    this run's summary); in both cases everything up to there is recorded.

    Args:
        params_file: The params file every stage reads (relative to the project folder).
        overrides: Advanced: section.key=value settings, like `llmrec --set` (e.g. train.max_minutes=5); they win over the settings below.
        settings: The usual knobs; fields left at 0 / empty / "from params file" keep the params file's value.
    """
    logger = get_run_logger()
    overrides = [*to_overrides(settings), *overrides]
    params = load_params(params_file, overrides)  # a wrong setting fails the run here, before any stage
    if overrides:
        logger.info("overrides of %s: %s", params_file, overrides)
    stage = StageClock(logger.info)
    with stage("ingest"):
        ingested = ingest(params_file, overrides)
    try:
        with stage("validate"):
            validated = validate(params_file, overrides)
    except ValidationFailed as refused:
        artifacts.validation_refused(refused, key="retrain-validation")
        raise
    with stage("version-data"):
        data_version = version(params_file, overrides)
    md5 = data_version["dvc_md5"]
    cached = []
    with stage("train"):
        trained, hit = run_cached(train.with_options(timeout_seconds=train_timeout(params)), params_file, overrides, md5, log=logger.info)
    cached += ["train"] if hit else []
    with stage("evaluate"):
        champion_version = champion(params_file, overrides)
        evaluated, hit = run_cached(evaluate, params_file, overrides, md5, trained["model_sha"], champion_version, log=logger.info)
    cached += ["evaluate"] if hit else []
    logger.info("holdout metrics of the model: %s", {k: round(v, 4) for k, v in evaluated["metrics"]["model"].items()})
    with stage("drift"):
        drift_verdict, hit = run_cached(drift, params_file, overrides, md5, champion_version, log=logger.info)
    cached += ["drift"] if hit else []
    if cached:
        logger.info("skipped (cached, same data version and params): %s", ", ".join(cached))
    with stage("register"):
        registered = register(params_file, overrides)
    with stage("promote"):
        decision = promote(params_file, overrides, registered, drift_verdict)
    logger.info("decision: %s (%s)", decision["action"], decision["rule"])
    if not overrides and Path(params_file).resolve() == Path("params.yaml").resolve():
        record_pipeline()  # dvc.lock tells the truth only when the run used params.yaml as it is
    result = {
        "ingest": ingested,
        "validation": {k: validated.get(k) for k in ("success", "statistics", "docs_path")},
        "data_version": {k: v for k, v in data_version.items() if k != "dvc_file"},
        "train": trained,
        "evaluation": evaluated,
        "registered": registered,
        "drift": drift_verdict,
        "decision": decision,
        "cached": cached,
        "seconds": stage.seconds,
    }
    artifacts.retrain_published(result, params)
    if decision.get("alert"):  # recorded everywhere above; now the run fails loudly instead of passing
        raise PromotionAlert(f"ALERT: {decision.get('alert_message') or decision['summary']}", summary=result)
    return result
