"""The `retrain` flow: ingest -> validate -> version -> train -> evaluate -> register -> drift -> promote.

Thin wiring only: every task is one call into llmrec.pipeline. Runs without a server
(Prefect's ephemeral mode) or against one (PREFECT_API_URL).
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from llmrec import pipeline
from llmrec.config import load_params
from llmrec.errors import PromotionAlert


def _params(params_file: str, overrides: list[str]):
    return load_params(params_file, overrides)


@task(name="ingest")
def ingest(params_file: str, overrides: list[str]) -> dict[str, Any]:
    return pipeline.run_ingest(_params(params_file, overrides))


@task(name="validate")
def validate(params_file: str, overrides: list[str]) -> dict[str, Any]:
    return pipeline.run_validate(_params(params_file, overrides))


@task(name="version-data", retries=2, retry_delay_seconds=[2, 10])
def version(params_file: str, overrides: list[str]) -> dict[str, Any]:
    return pipeline.run_version(_params(params_file, overrides))


@task(name="train")
def train(params_file: str, overrides: list[str]) -> dict[str, Any]:
    return pipeline.run_train(_params(params_file, overrides))


@task(name="evaluate", retries=1, retry_delay_seconds=5)
def evaluate(params_file: str, overrides: list[str]) -> dict[str, Any]:
    return pipeline.run_evaluate(_params(params_file, overrides))


@task(name="register")  # no retries: a retry after a half-finished registration would duplicate the version
def register(params_file: str, overrides: list[str]) -> dict[str, Any]:
    return pipeline.run_register(_params(params_file, overrides))


@task(name="drift")
def drift(params_file: str, overrides: list[str]) -> dict[str, Any]:
    return pipeline.run_drift(_params(params_file, overrides))


@task(name="promote")
def promote(params_file: str, overrides: list[str], registered: dict, drift_verdict: dict) -> dict[str, Any]:
    return pipeline.run_promote(_params(params_file, overrides), registered, drift_verdict)


@task(name="record-pipeline")
def record_pipeline() -> None:
    from llmrec.versioning import commit_pipeline

    commit_pipeline()


@flow(name="retrain", log_prints=True)
def retrain(params_file: str = "params.yaml", overrides: list[str] = []) -> dict[str, Any]:  # noqa: B006 - Prefect forms need a literal default
    """Retrain the ranker on the current data and let the promotion policy decide on it.

    Ends Failed (PromotionAlert, carrying this run's summary) when the decision raises an alert.
    """
    logger = get_run_logger()
    ingested = ingest(params_file, overrides)
    validated = validate(params_file, overrides)
    data_version = version(params_file, overrides)
    trained = train(params_file, overrides)
    evaluated = evaluate(params_file, overrides)
    logger.info("holdout metrics of the model: %s", {k: round(v, 4) for k, v in evaluated["metrics"]["model"].items()})
    drift_verdict = drift(params_file, overrides)
    registered = register(params_file, overrides)
    decision = promote(params_file, overrides, registered, drift_verdict)
    logger.info("decision: %s (%s)", decision["action"], decision["rule"])
    tables = evaluated["markdown"].split("\n### Plots")[0]  # the UI cannot show the report's local PNGs
    create_markdown_artifact(
        key="retrain-report",
        markdown=f"{tables}\n\nFull report with plots: `{evaluated['report_html']}`"
        f"\n\n**Model** {registered['name']} v{registered['version']} "
        f"(data `{data_version['dvc_md5']}`)\n\n**Drift**: {drift_verdict.get('summary') or drift_verdict.get('skipped')}"
        f"\n\n```\n{decision['summary']}\n```",
        description="Holdout metrics, drift verdict and promotion decision",
    )
    if not overrides:
        record_pipeline()
    result = {
        "ingest": ingested,
        "validation": {"success": validated["success"], "statistics": validated.get("statistics")},
        "data_version": {k: v for k, v in data_version.items() if k != "dvc_file"},
        "train": trained,
        "evaluation": evaluated,
        "registered": registered,
        "drift": drift_verdict,
        "decision": decision,
    }
    if decision.get("alert"):  # recorded everywhere above; now the run fails loudly instead of passing
        raise PromotionAlert(f"ALERT: {decision['alert_message']}", summary=result)
    return result
