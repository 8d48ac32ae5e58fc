"""Data drift between two periods with Evidently (the only module that imports it).

`impression_features` turns a canonical `Dataset` into one row of behaviour features per
impression; `drift_report` compares two such frames with Evidently's `DataDriftPreset` and
returns a `DriftVerdict` (also written to `drift.json`, next to the HTML report `drift.html`).

Evidently picks the per-column method by sample size: with <= 1000 reference rows it uses
statistical tests whose score is a p-value (drift when p < threshold, e.g. 0.05); above that it
uses distances (drift when distance >= threshold, e.g. 0.1). The per-column `drifted` flag is
read from Evidently's own test for that column (matched by metric id, never by position), and
`method` records which kind of score `score` is.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from llmrec.data.context import history_lengths
from llmrec.data.contract import UNLABELED, Dataset
from llmrec.errors import DataError

log = logging.getLogger(__name__)

NUMERICAL_FEATURES = ["history_len", "n_candidates", "ctr", "clicked_title_len", "hour"]
CATEGORICAL_FEATURES = ["clicked_category"]
NO_CLICK = "none"
UNKNOWN_ITEM = "unknown"
VALIDATE_FIRST = "validate the dataset first (llmrec.validation.validate_dataset)"


# --- features ----------------------------------------------------------------------------------


def impression_features(dataset: Dataset, log: Dataset | None = None) -> pd.DataFrame:
    """One row per impression (index: impression_id) with the behaviour features drift looks at.

    `log` (default: `dataset`) is what derived histories are counted in, for sources without
    explicit histories (see `llmrec.data.context`).

    history_len, n_candidates, hour (UTC): int; ctr: clicks / labeled candidates (NaN if none
    labeled); clicked_title_len: mean title word count of the clicked items (NaN if no click);
    clicked_category: category of the first clicked item ("none" if no click).
    """
    _check_tables(dataset)
    imps = dataset.impressions.set_index("impression_id")
    inter = dataset.interactions
    counts = inter.groupby("impression_id").size()
    labeled = inter[inter["label"] != UNLABELED]
    clicks = _clicked_items(inter, dataset.items)
    frame = pd.DataFrame(index=imps.index)
    frame["history_len"] = history_lengths(log or dataset, dataset.impressions).to_numpy()
    frame["n_candidates"] = counts.reindex(imps.index, fill_value=0).astype("int64")
    frame["ctr"] = labeled.groupby("impression_id")["label"].mean().reindex(imps.index).astype("float64")
    frame["clicked_title_len"] = clicks.groupby("impression_id")["title_len"].mean().reindex(imps.index)
    first = clicks.groupby("impression_id")["category"].first()
    frame["clicked_category"] = first.reindex(imps.index).fillna(NO_CLICK).astype(object)
    frame["hour"] = pd.to_datetime(imps["timestamp"], utc=True).dt.hour.astype("int64")
    return frame


def _check_tables(dataset: Dataset) -> None:
    needed = {
        "items": ["item_id", "title", "category"],
        "impressions": ["impression_id", "timestamp", "history"],
        "interactions": ["impression_id", "item_id", "label"],
    }
    for table, columns in needed.items():
        missing = [c for c in columns if c not in getattr(dataset, table).columns]
        if missing:
            raise DataError(f"{table} lacks the columns {missing}", fix=VALIDATE_FIRST)
    dup = dataset.impressions["impression_id"].duplicated()
    if dup.any():
        first = dataset.impressions.loc[dup, "impression_id"].iloc[0]
        raise DataError(f"impression_id {first!r} is not unique", fix=VALIDATE_FIRST)


def _clicked_items(inter: pd.DataFrame, items: pd.DataFrame) -> pd.DataFrame:
    """Clicked interactions (in their original order) with the item's category and title length."""
    meta = items.drop_duplicates("item_id").set_index("item_id")
    clicked = inter.loc[inter["label"] == 1, ["impression_id", "item_id"]]
    title_len = meta["title"].fillna("").astype(str).str.split().str.len().astype("float64")
    return pd.DataFrame(
        {
            "impression_id": clicked["impression_id"].to_numpy(),
            "category": clicked["item_id"].map(meta["category"]).fillna(UNKNOWN_ITEM).to_numpy(),
            "title_len": clicked["item_id"].map(title_len).to_numpy(),
        }
    )


# --- verdict -----------------------------------------------------------------------------------


@dataclass
class DriftVerdict:
    """Outcome of `drift_report`."""

    drift_detected: bool
    share_drifted: float
    threshold: float
    features: dict[str, dict] = field(default_factory=dict)
    drifted_features: list[str] = field(default_factory=list)
    n_reference: int = 0
    n_current: int = 0
    html_path: str | None = None

    def to_dict(self) -> dict:
        """JSON-able form (NaN scores become None)."""
        text = json.dumps(asdict(self), default=_json_default, allow_nan=True)
        return json.loads(text, parse_constant=lambda _: None)

    def summary(self) -> str:
        """A few readable lines."""
        head = "DRIFT detected" if self.drift_detected else "no drift"
        scored = [n for n, f in self.features.items() if f["score"] is not None]
        lines = [
            f"{head}: {len(self.drifted_features)}/{len(scored)} features drifted "
            f"(share {self.share_drifted:.2f}, threshold {self.threshold:.2f}; "
            f"reference {self.n_reference} rows, current {self.n_current} rows)"
        ]
        for name, f in self.features.items():
            mark = "DRIFT" if f["drifted"] else "ok"
            score = "n/a" if f["score"] is None or _isnan(f["score"]) else f"{f['score']:.3g}"
            lines.append(f"  {mark:<5} {name:<18} {score:>9}  ({f['method']}, threshold {f['threshold']})")
        return "\n".join(lines)


# --- report ------------------------------------------------------------------------------------


def drift_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    out_dir: str | Path,
    share_threshold: float = 0.5,
) -> DriftVerdict:
    """Compare current with reference feature frames; write drift.html and drift.json to out_dir."""
    numerical, categorical = _feature_columns(reference, current)
    usable, skipped = _usable(reference, current, numerical + categorical)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    num = [c for c in numerical if c in usable]
    cat = [c for c in categorical if c in usable]
    snapshot = _run_report(reference, current, num, cat, share_threshold)
    features = _column_results(snapshot.dict(), usable)
    features.update({name: _skipped(why) for name, why in skipped.items()})
    html = out_dir / "drift.html"
    snapshot.save_html(str(html))
    verdict = _verdict(features, usable, share_threshold, len(reference), len(current), str(html))
    (out_dir / "drift.json").write_text(json.dumps(verdict.to_dict(), indent=2))
    log.info("drift report in %.1f s: %s", time.perf_counter() - start, verdict.summary().splitlines()[0])
    return verdict


def _feature_columns(reference: pd.DataFrame, current: pd.DataFrame) -> tuple[list[str], list[str]]:
    """Numerical and categorical columns of the reference (which current must also have)."""
    for name, frame in (("reference", reference), ("current", current)):
        if not isinstance(frame, pd.DataFrame) or frame.empty:
            raise DataError(
                f"the {name} data for drift is empty",
                where=f"drift_report({name}=...)",
                fix="give both periods at least one impression (check the date split and the data path)",
            )
    missing = [c for c in reference.columns if c not in current.columns]
    if missing:
        raise DataError(f"the current data lacks the columns {missing}", fix="compute both frames the same way")
    numerical = [c for c in reference.columns if _is_numerical(reference[c])]
    categorical = [c for c in reference.columns if _is_categorical(reference[c])]
    if not numerical + categorical:
        raise DataError("no numerical or categorical column to compare", fix="pass impression_features(...) frames")
    return numerical, categorical


def _is_numerical(col: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)


def _is_categorical(col: pd.Series) -> bool:
    kinds = (pd.api.types.is_object_dtype, pd.api.types.is_string_dtype, pd.api.types.is_bool_dtype)
    return isinstance(col.dtype, pd.CategoricalDtype) or any(k(col) for k in kinds)


def _usable(reference: pd.DataFrame, current: pd.DataFrame, columns: list[str]) -> tuple[list[str], dict[str, str]]:
    """Columns with values on both sides; the others are skipped (Evidently cannot score them)."""
    usable, skipped = [], {}
    for col in columns:
        if reference[col].notna().any() and current[col].notna().any():
            usable.append(col)
        else:
            skipped[col] = "skipped: no values in reference or current"
            log.warning("drift: column %r has no values on one side; skipped", col)
    if not usable:
        raise DataError("every feature column is empty on one side", fix="check the inputs to drift_report")
    return usable, skipped


def _run_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    numerical: list[str],
    categorical: list[str],
    share_threshold: float,
) -> Any:
    os.environ.setdefault("DO_NOT_TRACK", "1")
    from evidently import DataDefinition, Report
    from evidently import Dataset as EvDataset
    from evidently.presets import DataDriftPreset

    columns = numerical + categorical
    definition = DataDefinition(numerical_columns=numerical, categorical_columns=categorical)

    def wrap(frame: pd.DataFrame) -> Any:
        return EvDataset.from_pandas(frame[columns].reset_index(drop=True), data_definition=definition)

    report = Report([DataDriftPreset(columns=columns, drift_share=share_threshold)], include_tests=True)
    return report.run(current_data=wrap(current), reference_data=wrap(reference))


def _column_results(snap: dict, columns: list[str]) -> dict[str, dict]:
    """Per-column drift read from ValueDrift metrics and their tests, matched by column and metric id."""
    status = {t["metric_config"]["metric_id"]: str(getattr(t["status"], "value", t["status"])) for t in snap["tests"]}
    out: dict[str, dict] = {}
    for metric in snap["metrics"]:
        config = metric.get("config", {})
        if not str(config.get("type", "")).endswith(":ValueDrift") or config.get("column") not in columns:
            continue
        method, threshold, score = str(config["method"]), float(config["threshold"]), float(metric["value"])
        own = _is_drift(method, score, threshold)
        drifted = status[metric["id"]] == "FAIL" if metric["id"] in status else own
        if drifted != own:
            log.warning("drift: %s: Evidently says drifted=%s, score rule says %s", config["column"], drifted, own)
        out[config["column"]] = {"drifted": drifted, "score": score, "method": method, "threshold": threshold}
    lost = [c for c in columns if c not in out]
    if lost:
        raise DataError(f"Evidently returned no drift result for {lost}", fix="check the column types")
    return {c: out[c] for c in columns}


def _is_drift(method: str, score: float, threshold: float) -> bool:
    """p-values drift when small, distances when large; NaN never counts as drift."""
    if _isnan(score):
        return False
    return score < threshold if "p_value" in method else score >= threshold


def _skipped(why: str) -> dict[str, Any]:
    return {"drifted": False, "score": None, "method": why, "threshold": None}


def _verdict(
    features: dict[str, dict], usable: list[str], share_threshold: float, n_ref: int, n_cur: int, html: str
) -> DriftVerdict:
    drifted = [c for c in usable if features[c]["drifted"]]
    share = len(drifted) / len(usable)
    return DriftVerdict(
        drift_detected=share >= share_threshold,  # Evidently's share test fails at share >= drift_share
        share_drifted=share,
        threshold=share_threshold,
        features=features,
        drifted_features=drifted,
        n_reference=n_ref,
        n_current=n_cur,
        html_path=html,
    )


def _isnan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return str(value)
