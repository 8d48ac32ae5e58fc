"""The pipeline stages as plain functions of `Params`, shared by the CLI, `dvc repro` and the flows.

Stages hand over through files under outputs/ (paths in params.yaml), never through memory,
so each one can run alone, be cached by DVC, or run as a Prefect task.

Why one module this long: every stage function (ingest to promote, the drift stage aside) in one module, so
the stages' order and hand-off files read in one place; each stage is short.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pandas as pd

from llmrec.config import Params
from llmrec.data.context import with_context
from llmrec.data.contract import Dataset
from llmrec.data.ingest import QUARANTINE_FILE, ingest
from llmrec.data.split import make_split

log = logging.getLogger(__name__)


def write_json(path: str | Path, data: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str))
    return path


def _read_json(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        from llmrec.errors import DataError

        raise DataError(
            f"{path.name} is missing: the stage that writes it has not run",
            where=str(path),
            fix="run the stages in order (ingest, validate, version, train, evaluate, register, drift, promote) or `llmrec retrain`",
        )
    return json.loads(path.read_text())


def configured_tracking(params: Params) -> Any:
    """llmrec.tracking with the MLflow server settings of `params` (timeout, retries)."""
    from llmrec import tracking

    tracking.configure(params.tracking.timeout_seconds, params.tracking.retries)
    return tracking


def champion_version(params: Params) -> str | None:
    """The version the `champion` alias points at now (None: no champion yet)."""
    tracking = configured_tracking(params)
    info = tracking.get_version(params.tracking.model_name, alias=tracking.CHAMPION)
    return info.version if info else None


def _check_same_model(*records: dict) -> None:
    """Refuse to mix records of different models (e.g. metrics of an older training run)."""
    from llmrec.errors import ModelError

    shas = {r.get("model_sha") for r in records}
    if len(shas) != 1 or None in shas:
        raise ModelError(
            "the trained model, its evaluation and its registration do not belong together "
            f"(weights fingerprints {sorted(str(s) for s in shas)})",
            fix="re-run `llmrec evaluate` (and `register`) after training, or run `llmrec retrain`",
        )


INGEST_RECORD = "ingest.json"  # in data.prepared: how the tables there came about (status, source, its fingerprint)


def run_ingest(params: Params) -> dict[str, Any]:
    """Source files -> canonical Parquet tables in data.prepared.

    The record data.prepared/ingest.json says "running" while it works and "failed" (with the error)
    when it fails, so no later stage reads tables an earlier ingest left there (`load_prepared`).
    """
    import time

    from llmrec.data.ingest import source_fingerprint

    prepared = Path(params.data.prepared)
    record = {"source": params.data.path, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if prepared.exists():  # tables of an earlier ingest may be there: fence them off until this one succeeds
        write_json(prepared / INGEST_RECORD, {**record, "status": "running"})
        (prepared / "data_version.json").unlink(missing_ok=True)  # described the tables being replaced
    try:
        fingerprint = source_fingerprint(params.data.path)
        result = ingest(params.data.path, params.data.prepared, params.data)
    except BaseException as exc:
        if prepared.exists():
            write_json(prepared / INGEST_RECORD, {**record, "status": "failed", "error": f"{type(exc).__name__}: {exc}"})
        raise
    d = result.dataset
    info = {
        "source": params.data.path,
        "format": result.format,
        "explicit_history": d.source.explicit_history,
        "logged_negatives": d.source.logged_negatives,
        "batches": result.batches,
        "items": len(d.items),
        "impressions": len(d.impressions),
        "interactions": len(d.interactions),
        "start": d.impressions["timestamp"].min().isoformat(),
        "end": d.impressions["timestamp"].max().isoformat(),
        "bad_rows": result.bad_rows(),
    }
    write_json(prepared / INGEST_RECORD, {**info, "status": "ok", "started": record["started"], "fingerprint": fingerprint})
    return info


def check_prepared(params: Params, same_source: bool = False) -> dict[str, Any]:
    """The ingest record of data.prepared, when its tables are from a finished ingest of a source unchanged since.

    Raises DataError when the last ingest failed or did not finish, or when its source changed since:
    the tables there would not be the data the user means. With `same_source`, the source must also be
    data.path (the tables of `llmrec ingest OTHER_FOLDER` are not data.path's).
    """
    from llmrec.data.ingest import source_changes
    from llmrec.errors import DataError

    prepared = Path(params.data.prepared)
    path = prepared / INGEST_RECORD
    if not path.is_file():
        raise DataError.at("no finished ingest here: the canonical tables are missing or were not written by `llmrec ingest`",
                           prepared, fix=f"run `llmrec ingest` (or `llmrec retrain`) on {params.data.path} first")
    record = json.loads(path.read_text())
    source, status = record.get("source"), record.get("status")
    again = f"run `llmrec ingest {source}` (or `llmrec retrain`) again"
    if status == "failed":
        raise DataError.at(
            f"the last ingest of {source} failed, so no stage may use the tables here; it said:\n    {record.get('error', '?')}",
            prepared, fix="fix the source as the error says, then " + again)
    if status != "ok":
        raise DataError.at(f"the last ingest of {source} did not finish (status {status!r}: stopped, or still running)",
                           prepared, fix=again)
    if same_source and Path(source).resolve() != Path(params.data.path).resolve():
        raise DataError.at(f"the tables here were ingested from {source}, not from data.path {params.data.path}",
                           prepared, fix=f"run `llmrec ingest` on {params.data.path}, or set data.path to {source}")
    changed = source_changes(source, record.get("fingerprint", {}))
    if changed:
        shown = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
        raise DataError.at(f"the source changed since it was ingested ({shown})", source, fix=again)
    return record


def load_prepared(params: Params) -> Dataset:
    """The canonical tables of data.prepared, after `check_prepared`."""
    check_prepared(params)
    return Dataset.load(params.data.prepared)


def run_validate(params: Params) -> dict[str, Any]:
    """Great Expectations suites on the canonical tables; raises ValidationFailed on errors."""
    from llmrec.validation import validate_dataset

    record = check_prepared(params)
    result = validate_dataset(Dataset.load(params.data.prepared), params.data.validation, bad_rows=record.get("bad_rows"))
    result.raise_for_errors()
    return result.to_dict()


def run_version(params: Params, root: str | Path = ".") -> dict[str, Any]:
    """Snapshot data/ with DVC and record its hash + the git revision."""
    from llmrec.versioning import version_data

    check_prepared(params, same_source=True)  # the version must describe the data the tables were made from
    version = version_data(params.data.path, root=root).to_dict()
    write_json(Path(params.data.prepared) / "data_version.json", version)
    return version


def _split(params: Params):
    return make_split(load_prepared(params), params.data.split, params.data.holdout_days)


def run_train(params: Params, progress: bool = True) -> dict[str, Any]:
    """Fine-tune the ranker on the training part of the temporal split."""
    split = _split(params)
    train = split.train
    from llmrec.model_types import MODEL_TYPES
    from llmrec.training import train as train_model

    if params.train.max_train_impressions and not MODEL_TYPES[params.model.type].whole_histories:
        recent = train.impressions.sort_values("timestamp", kind="stable").tail(params.train.max_train_impressions)
        train = train.restrict(recent["impression_id"])
    train = with_context(train, split.train, params.train.negatives_per_positive, params.train.seed)
    result = train_model(params.model.type, train, params.model, params.train, params.train.out, progress=progress)
    from llmrec.models.io import fingerprint
    from llmrec.training.distributed import is_main_process

    info = {**result.to_dict(), "split": split.describe(), "model_sha": fingerprint(params.train.out)}
    if not is_main_process():  # torchrun / accelerate launch: rank 0 writes the records
        return {k: v for k, v in info.items() if k != "losses"}
    write_json(Path(params.train.out) / "train.json", info)
    _write_plot(params, "train_loss.csv", pd.DataFrame({"step": range(1, len(result.losses) + 1), "loss": result.losses}))
    return {k: v for k, v in info.items() if k != "losses"}


def champion_model_dir(params: Params, dest: str | Path) -> tuple[str | None, Path | None]:
    """Download the current champion's ranker folder (None when there is no champion)."""
    tracking = configured_tracking(params)

    champion = tracking.get_version(params.tracking.model_name, alias=tracking.CHAMPION)
    if champion is None:
        return None, None
    return champion.version, tracking.download_model_dir(params.tracking.model_name, champion.version, dest)


def run_evaluate(params: Params, with_champion: bool = True, progress: bool = True) -> dict[str, Any]:
    """Score the holdout with the model, baselines and the champion; write metrics + report."""
    from llmrec.evaluation.baselines import fit_baselines
    from llmrec.evaluation.evaluate import evaluate, sample_impressions
    from llmrec.models.backbone import resolve_backbone
    from llmrec.models.io import fingerprint
    from llmrec.models.ranker import is_pair_scorer, load_ranker, ranker_scorer

    dataset = load_prepared(params)
    split = make_split(dataset, params.data.split, params.data.holdout_days)
    holdout = sample_impressions(split.holdout, params.eval.max_impressions, params.eval.seed)
    holdout = with_context(holdout, dataset, params.eval.negatives, params.eval.seed)
    train = with_context(split.train, split.train, 0, params.eval.seed)  # histories for the collaborative baselines
    model = load_ranker(params.train.out, device=params.train.device)
    scorers = {"model": ranker_scorer(model, split.train.items, params.eval.batch_size, progress)}
    pair_scorers = {"model"} if is_pair_scorer(model) else set()
    champion_version = None
    if with_champion:
        champion_version, folder = champion_model_dir(params, Path(params.eval.out) / "champion")
        if folder is not None:
            champion = load_ranker(folder, device=params.train.device)
            scorers["champion"] = ranker_scorer(champion, split.train.items, params.eval.batch_size, progress)
            pair_scorers |= {"champion"} if is_pair_scorer(champion) else set()
    baselines = list(params.eval.baselines)
    if pair_scorers and params.eval.catalogue_impressions and params.eval.retriever not in baselines:
        baselines.append(params.eval.retriever)  # a cross-encoder re-ranks the retriever's top-N in the catalogue protocol
    backbone = resolve_backbone(params.model.backbone) if "zero_shot" in baselines else None
    scorers.update(
        fit_baselines(
            train, dataset.items, baselines, backbone=backbone, seed=params.eval.seed,
            batch_size=params.eval.batch_size, device=params.train.device, progress=progress, sasrec=params.eval.sasrec,
        )
    )
    report = evaluate(
        holdout, split.train, dataset, scorers,
        ks=params.eval.ks, primary=params.promotion.metric, seed=params.eval.seed,
        catalogue_scorers=[n for n in scorers if n not in pair_scorers],
        rerankers={n: (params.eval.retriever, params.eval.rerank_top) for n in pair_scorers},
        catalogue_impressions=params.eval.catalogue_impressions, confidence=params.eval.confidence,
        sampled_negatives=params.eval.negatives if params.eval.sampled_on_impressions else 0,
    )
    report.holdout.update(
        {
            "cutoff": split.cutoff.isoformat(),
            "split": params.data.split if params.data.split != "auto" else ("temporal" if dataset.source.logged_negatives else "leave-last-out"),
            "champion_version": champion_version,
            "model_sha": fingerprint(params.train.out),
        }
    )
    from llmrec.evaluation.stats import paired_bootstrap

    per = report.per_impression
    if "champion" in per:
        report.comparisons["vs_champion"] = paired_bootstrap(per["model"], per["champion"], params.promotion.metric, seed=params.eval.seed)
        report.holdout["vs_champion"] = report.comparisons["vs_champion"]
    baselines = [b for b in params.eval.baselines if b in report.metrics]
    if baselines:
        best = max(baselines, key=lambda b: report.metrics[b].get(params.promotion.metric, float("-inf")))
        report.comparisons[f"vs_{best}"] = paired_bootstrap(per["model"], per[best], params.promotion.metric, seed=params.eval.seed)
    training = _training_record(params)
    if training:
        report.holdout["training"] = training
    from llmrec.evaluation.report import save_report, to_markdown

    paths = save_report(report, params.eval.out)
    _write_plot(params, "rankers.csv", report.table().rename_axis("ranker").reset_index())
    return {
        "metrics": report.metrics,
        "holdout": report.holdout,
        "comparisons": report.comparisons,
        "markdown": to_markdown(report),
        "report_html": str(paths["html"]),
    }


def run_register(params: Params, run_name: str = "retrain") -> dict[str, Any]:
    """Log the run (params, metrics, curves, reports, lineage) and register the model as `challenger`."""
    tracking = configured_tracking(params)

    check_prepared(params)
    train_info = _read_json(Path(params.train.out) / "train.json")
    evaluation = _read_json(Path(params.eval.out) / "metrics.json")
    version = _read_json(Path(params.data.prepared) / "data_version.json")
    ingest_info = _read_json(Path(params.data.prepared) / "ingest.json")
    validation = Path(params.data.validation) / "validation.json"
    from llmrec.models.io import fingerprint

    current = {"model_sha": fingerprint(params.train.out)}
    _check_same_model(train_info, {"model_sha": evaluation["holdout"].get("model_sha")}, current)
    split = train_info["split"]
    tags = {
        "run_name": run_name,
        "data.dvc_md5": version["dvc_md5"],
        "data.dvc_file": version["dvc_file"],
        "data.git_revision": version["git_revision"],
        "data.git_dirty": str(version["git_dirty"]).lower(),
        "data.path": params.data.path,
        "data.batches": ",".join(ingest_info["batches"]),
        "data.train_end": split["train_end"],
        "data.cutoff": split["cutoff"],
        "data.end": ingest_info["end"],
        "validation.success": str(_read_json(validation).get("success", "unknown")).lower() if validation.exists() else "unknown",
        "model.type": params.model.type,
        "params.hash": params_hash(params),
        "train.stopped": str(train_info.get("stopped", "completed")),
        "train.under_trained": str(bool(train_info.get("under_trained", False))).lower(),
        "train.note": str(train_info.get("note", ""))[:500],
    }
    flat_metrics = {f"{name}.{k}": v for name, ms in evaluation["metrics"].items() for k, v in ms.items()}
    flat_metrics.update({k: v for k, v in evaluation["metrics"]["model"].items()})
    main = evaluation.get("protocols", {}).get(evaluation.get("protocol", ""), {})
    for metric, (low, high) in main.get("intervals", {}).get("model", {}).items():
        flat_metrics.update({f"{metric}.ci_low": low, f"{metric}.ci_high": high})
    for name, protocol in evaluation.get("protocols", {}).items():
        if name != evaluation.get("protocol"):
            flat_metrics.update({f"{name}.{r}.{k}": v for r, ms in protocol["metrics"].items() for k, v in ms.items()})
    flat_metrics.update({"train.pairs_per_second": train_info["pairs_per_second"], "train.seconds": train_info["seconds"]})
    bad = ingest_info.get("bad_rows") or {}
    flat_metrics.update({"data.bad_rows": bad.get("rows", 0), "data.bad_row_share": bad.get("share", 0.0), "data.rows_read": bad.get("read", 0)})
    quarantined = Path(params.data.prepared) / QUARANTINE_FILE
    registered = tracking.register_model(
        params.train.out,
        Path(params.data.prepared) / "items.parquet",
        model_name=params.tracking.model_name,
        experiment=params.tracking.experiment,
        params=flat_params(params),
        metrics=flat_metrics,
        tags=tags,
        step_losses=train_info.get("losses"),
        artifacts=[Path(params.eval.out) / "report.md", Path(params.eval.out) / "report.html", Path(params.eval.out) / "plots", Path(params.eval.out) / "metrics.json", Path(params.data.validation), Path(params.data.prepared) / "data_version.json", quarantined],
    )
    tracking.set_alias(params.tracking.model_name, tracking.CHALLENGER, registered.version)
    record = {**registered.to_dict(), "model_sha": current["model_sha"]}
    write_json(outputs_dir(params) / "registered.json", record)
    return record


def run_promote(params: Params, registered: dict[str, Any] | None = None, drift: dict[str, Any] | None = None) -> dict[str, Any]:
    """Apply the promotion policy; switch the `champion` alias only when it says promote."""
    tracking = configured_tracking(params)
    from llmrec.promotion import PROMOTE, decide

    registered = registered or _read_json(outputs_dir(params) / "registered.json")
    drift = drift if drift is not None else _read_json(outputs_dir(params) / "drift_verdict.json")
    evaluation = _read_json(Path(params.eval.out) / "metrics.json")
    _check_same_model(registered, {"model_sha": evaluation["holdout"].get("model_sha")})
    champion = tracking.get_version(params.tracking.model_name, alias=tracking.CHAMPION)
    champion_version = champion.version if champion else None
    metrics = evaluation["metrics"]
    if champion_version != evaluation["holdout"].get("champion_version"):
        # the champion was not scored (or changed since): the policy must not treat this as "no champion"
        metrics = {k: v for k, v in metrics.items() if k != "champion"}
    main = evaluation.get("protocols", {}).get(evaluation.get("protocol", ""), {})
    metric = params.promotion.metric
    intervals = {r: ms[metric] for r, ms in main.get("intervals", {}).items() if metric in ms and r in metrics}
    validation = Path(params.data.validation) / "validation.json"
    decision = decide(
        metrics,
        params.promotion,
        challenger_version=registered["version"],
        champion_version=champion_version,
        drift=drift,
        comparison=evaluation["holdout"].get("vs_champion") if "champion" in metrics else None,
        intervals=intervals,
        champion_registered_value=champion.metrics.get(tracking.metric_key(metric)) if champion else None,
        validation_ok=_read_json(validation).get("success", True) if validation.is_file() else True,
        training=_training_record(params),
    )
    decision.thresholds["drift"] = params.drift.model_dump(exclude={"out"})
    record = decision.to_dict()
    write_json(outputs_dir(params) / "decision.json", record)
    try:
        _record_decision(params, registered, record, drift, decision.action == PROMOTE)
    except Exception:
        tracking.set_version_tags(params.tracking.model_name, registered["version"], {"decision": "failed"})
        raise
    if decision.alert:
        log.error("ALERT: %s", decision.alert_message)
    return {**record, "summary": decision.summary()}


def _training_record(params: Params) -> dict[str, Any]:
    """How the model in train.out ended training (under_trained, note, stopped), {} for a folder without train.json."""
    path = Path(params.train.out) / "train.json"
    info = _read_json(path) if path.is_file() else {}
    return {k: info[k] for k in ("under_trained", "note", "stopped", "steps", "planned_steps") if k in info}


def _record_decision(params: Params, registered: dict, record: dict, drift: dict, promote: bool) -> None:
    """Attach the decision and the drift verdict to the MLflow run and version, then (only then) move the alias.

    The HTML reports stay local (outputs/drift/*.html, several MB at scale); the verdict is logged."""
    tracking = configured_tracking(params)

    tracking.log_run_dict(registered["run_id"], record, "decision.json")
    if drift.get("html_path"):
        tracking.log_run_artifacts(registered["run_id"], [Path(drift["html_path"]).with_suffix(".json")])
    if promote:
        tracking.promote(params.tracking.model_name, registered["version"], "; ".join(record["reasons"]))
    tracking.set_version_tags(
        params.tracking.model_name,
        registered["version"],
        {"decision": record["action"], "decision.rule": record["rule"], "decision.alert": str(record["alert"]).lower()},
    )


def _write_plot(params: Params, name: str, frame: pd.DataFrame) -> None:
    """Data for `dvc plots show` (declared in dvc.yaml): outputs/plots/<name>."""
    folder = outputs_dir(params) / "plots"
    folder.mkdir(parents=True, exist_ok=True)
    frame.to_csv(folder / name, index=False)


def outputs_dir(params: Params) -> Path:
    """Folder for the small records of the latest run (registered version, drift verdict, decision)."""
    return Path(params.eval.out).parent


def checkout_model_data(params: Params, version: str, root: str | Path = ".") -> dict[str, Any]:
    """Restore data/ to exactly what a registered model version was trained on."""
    tracking = configured_tracking(params)
    from llmrec.errors import TrackingError
    from llmrec.versioning import checkout_data, latest_snapshot

    info = tracking.get_version(params.tracking.model_name, version=version)
    if info is None:
        raise TrackingError(f"model {params.tracking.model_name!r} has no version {version}", fix="see `llmrec models list`")
    dvc_file = info.tags.get("data.dvc_file")
    if not dvc_file:
        raise TrackingError(f"version {version} carries no data.dvc_file tag (registered before lineage was recorded)")
    md5 = checkout_data(dvc_file, root=root)
    return {"version": version, "dvc_md5": md5, "git_revision": info.tags.get("data.git_revision"),
            "data_path": info.tags.get("data.path"), "snapshot": latest_snapshot(root) is not None}


def restore_latest_data(root: str | Path = ".") -> dict[str, Any]:
    """Undo `checkout_model_data`: data/ as it was before the (first of a series of) checkouts."""
    from llmrec.versioning import restore_latest

    return {"dvc_md5": restore_latest(root=root)}


def flat_params(params: Params) -> dict[str, Any]:
    out = {}
    for section in ("data", "model", "train", "eval", "drift", "promotion"):
        for key, value in getattr(params, section).model_dump().items():
            out[f"{section}.{key}"] = value
    return out


def params_hash(params: Params) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(flat_params(params), sort_keys=True, default=str).encode()).hexdigest()[:12]
