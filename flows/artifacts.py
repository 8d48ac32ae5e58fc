"""What a run shows in the Prefect UI (Artifacts tab): metrics vs baselines and champion, the decision
record, links to the MLflow run and model version, and where the HTML reports are on disk."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact

from llmrec.config import Params
from llmrec.errors import ValidationFailed

METRICS = ["auc", "mrr", "ndcg@5", "ndcg@10"]


def metrics_rows(evaluation: dict[str, Any], decision: dict[str, Any], params: Params) -> list[dict[str, Any]]:
    """One row per ranker on the holdout: the challenger first, then the champion, then the baselines by the policy metric."""
    metric, metrics = params.promotion.metric, evaluation["metrics"]
    intervals = decision.get("intervals") or {}
    champion = evaluation["holdout"].get("champion_version")
    order = sorted(metrics, key=lambda r: (r != "model", r != "champion", -metrics[r].get(metric, 0.0)))
    rows = []
    for ranker in order:
        role = {"model": "challenger (this run)", "champion": f"champion v{champion}"}.get(ranker)
        role = role or ("baseline (must beat)" if ranker in params.promotion.must_beat else "baseline")
        row: dict[str, Any] = {"ranker": ranker, "role": role}
        row.update({m: round(float(metrics[ranker][m]), 4) for m in METRICS if m in metrics[ranker]})
        low_high = intervals.get(ranker)
        row[f"{metric} interval"] = f"[{low_high[0]:.4f}, {low_high[1]:.4f}]" if low_high else ""
        rows.append(row)
    return rows


def mlflow_ui() -> str | None:
    """The MLflow UI's base URL when MLFLOW_TRACKING_URI is an http(s) server, else None."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    return uri.rstrip("/") if uri.startswith(("http://", "https://")) else None


def html_reports(evaluation: dict[str, Any] | None, validation: dict[str, Any], drift: dict[str, Any] | None) -> dict[str, str]:
    """Name -> absolute path of the HTML reports a run wrote (evaluation, Data Docs, the drift reports)."""
    drift = drift or {}
    found = {
        "evaluation report": (evaluation or {}).get("report_html"),
        "Data Docs (validation)": validation.get("docs_path"),
        "drift report": drift.get("html_path"),
        **{f"drift report ({signal})": (drift.get(signal) or {}).get("html_path") for signal in ("embedding", "prediction")},
    }
    return {name: str(Path(path).resolve()) for name, path in found.items() if path}


def _paths(reports: dict[str, str]) -> list[str]:
    return ["**Reports on the runner's disk**:", "", *(f"- {name}: `{path}`" for name, path in reports.items()), ""]


def decision_markdown(decision: dict[str, Any], registered: dict[str, Any]) -> str:
    lines = [f"## Decision on {registered['name']} v{registered['version']}: **{decision['action'].upper()}**", "",
             f"Rule: `{decision['rule']}`", ""]
    if decision.get("alert"):
        lines += [f"> **ALERT**: {decision.get('alert_message')}", ""]
    lines += [f"- {reason}" for reason in decision.get("reasons", [])]
    record = {k: v for k, v in decision.items() if k not in ("summary", "reasons")}
    lines += ["", "<details><summary>decision record (JSON)</summary>", "", "```json",
              json.dumps(record, indent=2, default=str), "```", "</details>"]
    return "\n".join(lines)


def retrain_published(result: dict[str, Any], params: Params) -> None:
    """Publish a finished retrain run's artifacts (also when its decision raised an alert)."""
    evaluation, decision, registered = result["evaluation"], result["decision"], result["registered"]
    create_table_artifact(
        key="retrain-metrics",
        table=metrics_rows(evaluation, decision, params),
        description=f"Holdout metrics (protocol the policy reads) of the challenger, the champion and the baselines; "
        f"the interval is the {params.promotion.metric} bootstrap interval",
    )
    create_markdown_artifact(key="retrain-decision", markdown=decision_markdown(decision, registered),
                             description=f"Promotion decision: {decision['action']} ({decision['rule']})")
    tables = evaluation["markdown"].split("\n### Plots")[0]  # the UI cannot show the report's local PNGs
    drift = result["drift"] or {}
    version = result["data_version"]
    lines = [
        f"## {registered['name']} v{registered['version']}: {decision['action'].upper()} (rule `{decision['rule']}`)", "",
        f"Run `{registered['run_id']}`; trained on data `{version['dvc_md5']}` (git {version['git_revision'][:10]}).", "",
        f"**Skipped (cached, same data version and params)**: {', '.join(result['cached']) or 'none'}", "",
        *_paths(html_reports(evaluation, result["validation"], drift)),
        "**Drift** since the champion's data:", "", "```", drift.get("summary") or drift.get("skipped", "not measured"), "```", "",
        tables,
    ]
    create_markdown_artifact(key="retrain-report", markdown="\n".join(lines),
                             description="Holdout evaluation, drift verdict, decision and report paths")
    mlflow_links(registered)


def mlflow_links(registered: dict[str, Any]) -> None:
    """Links to the MLflow run and the model version (a note with the store's path when MLflow is not a server)."""
    base = mlflow_ui()
    name, version, run_id = registered["name"], registered["version"], registered["run_id"]
    if base is None:
        from llmrec import tracking

        create_markdown_artifact(
            key="mlflow-links",
            markdown=f"MLflow store: `{tracking.tracking_uri()}` (no server). Browse it with `make mlflow-ui`, then "
            f"open model **{name}** version **{version}** (run `{run_id}`).",
            description="Where the MLflow run and model version are",
        )
        return
    create_link_artifact(key="mlflow-run", link=f"{base}/#/runs/{run_id}", link_text=f"MLflow run {run_id}",
                         description="The MLflow run: params, metrics, reports, the logged model")
    create_link_artifact(key="mlflow-model-version", link=f"{base}/#/models/{quote(name)}/versions/{version}",
                         link_text=f"{name} version {version}", description="The registered model version, its tags and aliases")


def validation_refused(error: ValidationFailed, key: str) -> None:
    """The failed expectations and the Data Docs path, before the run fails on them."""
    docs = f"\n\nData Docs: `{Path(error.report_path).resolve()}`" if error.report_path else ""
    create_markdown_artifact(key=key, markdown=f"## Validation refused the data\n\n```\n{error.summary}\n```{docs}",
                             description="Great Expectations found errors: the run stopped before using the data")


def monitor_published(record: dict[str, Any]) -> None:
    """The monitor's drift verdict and decision on one batch."""
    decision, drift, ingested = record["decision"], record.get("drift") or {}, record["ingest"]
    champion = f"v{record['champion_version']}" if record.get("champion_version") else "none"
    lines = [
        f"## Batch `{record['batch']}`: **{decision['action'].upper()}**", "",
        (f"{ingested['impressions']:,} impressions ({ingested['start']} .. {ingested['end']}), validation passed "
         f"({record['validation'].get('n_warnings', 0)} warnings); champion: {champion}"), "",
        "```", decision["summary"], "```", "",
        *_paths(html_reports(None, record["validation"], drift)),
        "**Drift** of the batch vs the champion's data:", "", "```", drift.get("summary") or "not measured", "```",
    ]
    create_markdown_artifact(key="monitor-decision", markdown="\n".join(lines),
                             description=f"Monitoring decision: {decision['action']} ({decision['rule']})")
