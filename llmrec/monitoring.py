"""Monitoring: Evidently drift of the data that arrived since the champion's, and the decision a new batch gets.

`run_drift` (a retrain's drift stage) compares the prepared data newer than the champion's with what the
champion trained on; `run_monitor` ingests and validates a new batch folder, compares it the same way and
decides whether to retrain; `add_batch` puts the batch into `data.path` for that retrain. The signals
themselves (features, item-text embeddings, champion scores) are `llmrec.drift`'s, the decision
`llmrec.promotion.monitor_decision`'s. Built on the stage helpers of `llmrec.pipeline`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from llmrec.config import Params
from llmrec.data.context import with_context
from llmrec.data.contract import Dataset
from llmrec.data.ingest import ingest
from llmrec.pipeline import champion_model_dir, configured_tracking, load_prepared, outputs_dir, write_json


def run_drift(params: Params) -> dict[str, Any]:
    """Evidently drift of the data that arrived after the champion's data vs what it was trained on."""
    result = _drift_verdict(params)
    write_json(outputs_dir(params) / "drift_verdict.json", result)
    return result


def _drift_verdict(params: Params) -> dict[str, Any]:
    tracking = configured_tracking(params)
    from llmrec.data.split import time_slice

    champion = tracking.get_version(params.tracking.model_name, alias=tracking.CHAMPION)
    if champion is None:
        return {"skipped": "no champion yet: nothing to compare against", "drift_detected": False, "n_current": 0}
    dataset = load_prepared(params)
    reference = _champion_reference(params, champion, dataset)
    current = time_slice(dataset, start=pd.Timestamp(champion.tags["data.end"]))
    if current.impressions.empty:
        return {"skipped": f"no data newer than the champion's ({champion.tags['data.end']})", "drift_detected": False, "n_current": 0}
    folder = champion_model_dir(params, Path(params.drift.out) / "champion")[1] if params.drift.prediction else None
    verdict = drift_between(params, reference, current, dataset, params.drift.out, folder)
    return {**verdict, "champion_version": champion.version}


def _champion_reference(params: Params, champion: Any, dataset: Dataset) -> Dataset:
    """The impressions the champion was trained on (up to its data.train_end tag) in the prepared tables."""
    from llmrec.data.split import time_slice
    from llmrec.errors import DataError, TrackingError

    if not {"data.train_end", "data.end"} <= set(champion.tags):
        raise TrackingError(
            f"champion v{champion.version} has no data.train_end / data.end tags, so its reference data is unknown",
            fix="promote a version registered by llmrec (see `llmrec models list`)",
        )
    reference = time_slice(dataset, end=pd.Timestamp(champion.tags["data.train_end"]), inclusive_end=True)
    if reference.impressions.empty:
        raise DataError(
            f"the prepared tables hold none of champion v{champion.version}'s training data "
            f"(up to {champion.tags['data.train_end']})",
            where=params.data.prepared,
            fix=f"ingest the data the champion was trained on ({champion.tags.get('data.path', 'data.path')}) with `llmrec ingest`",
        )
    return reference


def drift_between(
    params: Params,
    reference: Dataset,
    current: Dataset,
    log: Dataset,
    out_dir: str | Path,
    champion_dir: str | Path | None = None,
) -> dict[str, Any]:
    """The drift verdict of `current` vs `reference` (both slices of `log`): features, item-text embeddings
    (params.model.backbone) and, with a champion folder, its score distribution. Reports go to out_dir."""
    from llmrec.drift import drift_report, impression_features, unseen_shares

    drift = params.drift
    ref = impression_features(reference, log, drift.lookback_hours)
    cur = impression_features(current, log, drift.lookback_hours)
    items = pd.concat([log.items, current.items]).drop_duplicates("item_id", keep="last")
    embedding = _embedding_signal(params, reference, current, items, out_dir) if drift.embedding else None
    prediction = None
    if drift.prediction and champion_dir is not None:
        prediction = _prediction_signal(params, reference, current, log, items, Path(champion_dir), out_dir)
    verdict = drift_report(
        ref, cur, out_dir, drift.share_threshold, extra=unseen_shares(reference, current, drift.unseen_margin),
        embedding=embedding, prediction=prediction, decide_on=drift.decide_on, ignore=drift.ignore,
    )
    return {**verdict.to_dict(), "summary": verdict.summary()}


def _sample_ids(ids: pd.Index, n: int, rng: Any) -> pd.Index:
    import numpy as np

    ids = ids.sort_values()
    return ids if len(ids) <= n else ids[np.sort(rng.choice(len(ids), n, replace=False))]


def _embedding_signal(
    params: Params, reference: Dataset, current: Dataset, items: pd.DataFrame, out_dir: str | Path
) -> dict[str, Any]:
    """Backbone embeddings (the zero-shot baseline's encoder) of items new in `current` vs the reference's items."""
    import numpy as np

    from llmrec.drift import embedding_drift

    drift = params.drift
    known = pd.Index(reference.interactions["item_id"].unique())
    new = pd.Index(current.interactions["item_id"].unique()).difference(known)
    rng = np.random.default_rng(drift.seed)
    ref_ids, new_ids = _sample_ids(known, drift.embedding_sample, rng), _sample_ids(new, drift.embedding_sample, rng)
    kwargs = {"method": drift.embedding_method, "threshold": drift.embedding_threshold, "html": drift.embedding_html}
    if min(len(ref_ids), len(new_ids)) < MIN_EMBEDDED_ITEMS:  # too few to test: embedding_drift says so, nothing encoded
        empty = (np.zeros((len(ref_ids), 1)), np.zeros((len(new_ids), 1)))
        return embedding_drift(*empty, min_items=MIN_EMBEDDED_ITEMS, **kwargs)
    from llmrec.evaluation.baselines import item_embeddings

    table = items.set_index("item_id").loc[ref_ids.append(new_ids)].rename_axis("item_id").reset_index()
    _, vectors = item_embeddings(table, params.model.backbone, params.eval.batch_size, params.train.device)
    ref, new = vectors[: len(ref_ids)], vectors[len(ref_ids) :]
    return embedding_drift(ref, new, out_dir, min_items=MIN_EMBEDDED_ITEMS, **kwargs)


MIN_EMBEDDED_ITEMS = 20


def _prediction_signal(
    params: Params, reference: Dataset, current: Dataset, log: Dataset, items: pd.DataFrame, folder: Path, out_dir: str | Path
) -> dict[str, Any]:
    """The champion's scores on one seeded candidate of each of up to drift.prediction_sample impressions per side.

    One candidate per impression: an impression's candidates share its user, so their scores move
    together, and a test over all of them would count one user's taste many times.
    """
    from llmrec.drift import prediction_drift
    from llmrec.models.ranker import load_ranker, ranker_scorer

    score = ranker_scorer(load_ranker(folder, device=params.train.device), items, params.eval.batch_size)
    n, seed = params.drift.prediction_sample, params.drift.seed
    ref, cur = (score(_candidates(part, log, n, seed)) for part in (reference, current))
    return prediction_drift(ref, cur, out_dir)


def _candidates(part: Dataset, log: Dataset, n: int, seed: int) -> pd.DataFrame:
    """history + item_id of one random candidate of each of up to n random impressions (seeded)."""
    imps = part.impressions.sort_values("impression_id", kind="stable")
    imps = imps.sample(n=min(n, len(imps)), random_state=seed)
    sub = with_context(part.restrict(imps["impression_id"]), log, 0, seed)  # derived histories where the source has none
    inter = sub.interactions.sort_values(["impression_id", "item_id"], kind="stable")
    one = inter.sample(frac=1.0, random_state=seed).drop_duplicates("impression_id")
    histories = sub.impressions[["impression_id", "history"]]
    frame = one[["impression_id", "item_id"]].merge(histories, on="impression_id")
    return frame[["history", "item_id"]]


def run_monitor(params: Params, batch: str | Path) -> dict[str, Any]:
    """A new batch arrived: ingest + validate it, compare it with the champion's data, decide.

    Returns {"batch", "ingest", "validation", "champion_version", "drift", "decision", "retrain_needed"}:
    decision "no action" (no drift) or "retrain needed" (drift, or no champion yet). A batch that
    fails to load or validate raises (DataError / ValidationFailed): no decision, nothing moves.
    The record goes to outputs/monitor/monitor.json and, with a champion, onto its MLflow run.
    Retraining is the caller's step (`llmrec monitor --retrain`, a flow): see `add_batch`.
    """
    import time

    tracking = configured_tracking(params)
    from llmrec.data.split import time_slice
    from llmrec.promotion import monitor_decision
    from llmrec.validation import validate_dataset

    out = outputs_dir(params) / "monitor"
    loaded = ingest(batch, out / "prepared", params.data)
    validation = validate_dataset(loaded.dataset, out / "validation", bad_rows=loaded.bad_rows())
    validation.raise_for_errors()
    current = loaded.dataset
    stamps = current.impressions["timestamp"]
    record: dict[str, Any] = {
        "batch": str(batch),
        "ingest": {"format": loaded.format, "impressions": len(current.impressions),
                   "interactions": len(current.interactions), "start": stamps.min().isoformat(), "end": stamps.max().isoformat()},
        "validation": {"success": validation.success, "n_warnings": len(validation.warnings),
                       "docs_path": validation.docs_path},
    }
    champion = tracking.get_version(params.tracking.model_name, alias=tracking.CHAMPION)
    verdict = None
    if champion is not None:
        prepared = load_prepared(params)
        reference = _champion_reference(params, champion, prepared)
        if _source_kind(reference) != _source_kind(current):
            from llmrec.errors import DataError

            raise DataError.at(
                f"the batch is {loaded.format} data, unlike the {reference.source.format} data champion v{champion.version} "
                "was trained on, so their features cannot be compared",
                batch,
                fix="monitor batches of the champion's own source format",
            )
        folder = champion_model_dir(params, out / "champion")[1] if params.drift.prediction else None
        # the log: everything known before the batch (popularity, item age, histories look back into it)
        before = time_slice(prepared, end=stamps.min())
        verdict = drift_between(params, reference, current, _union(before, current), out / "drift", folder)
        verdict["champion_version"] = champion.version
    decision = monitor_decision(verdict, champion.version if champion else None, params.drift)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    record.update({"champion_version": champion.version if champion else None, "drift": verdict, "decision": decision,
                   "retrain_needed": decision["retrain_needed"], "at": stamp})
    write_json(out / "monitor.json", record)
    if champion is not None:
        tracking.log_run_dict(champion.run_id, record, f"monitor-{stamp}.json")
        last = {"monitor.last": f"{stamp} {decision['action']}"}
        tracking.set_version_tags(params.tracking.model_name, champion.version, last)
    return record


def _source_kind(dataset: Dataset) -> tuple[bool, bool]:
    return dataset.source.explicit_history, dataset.source.logged_negatives


def _union(known: Dataset, batch: Dataset) -> Dataset:
    """One log of the known data and a separately ingested batch (rows in both are kept once)."""
    items = pd.concat([known.items, batch.items]).drop_duplicates("item_id", keep="last")
    imps = pd.concat([known.impressions, batch.impressions]).drop_duplicates("impression_id", keep="first")
    inter = pd.concat([known.interactions, batch.interactions])
    inter = inter.drop_duplicates(["impression_id", "item_id"], keep="first")
    imps = imps.sort_values("timestamp", kind="stable").reset_index(drop=True)
    return Dataset(items.reset_index(drop=True), imps, inter.reset_index(drop=True), known.source)


def add_batch(params: Params, batch: str | Path) -> Path:
    """Put a new batch folder into data.path (a folder of batch folders) so the next retrain trains on it."""
    import shutil

    from llmrec.data.ingest import detect_format
    from llmrec.errors import DataError

    batch, root = Path(batch).resolve(), Path(params.data.path).resolve()
    if root in batch.parents:
        return batch
    if root.is_dir() and detect_format(root, params.data):
        raise DataError.at(
            "data.path is one dataset folder, not a folder of batch folders, so a new batch cannot be added to it",
            root,
            fix=f"move its files into a subfolder (e.g. {root}/batch1) so data.path holds batch folders",
        )
    target = root / batch.name
    if target.exists():
        raise DataError.at(f"data.path already holds a batch named {batch.name!r}", target,
                           fix="rename the new batch folder (batch folders are read in name order)")
    shutil.copytree(batch, target)
    return target
