"""Drift between the champion's reference data and a current batch, with Evidently (the only module importing it).

Three signals, each from Evidently, and one verdict the promotion policy reads:

- **interaction features**, one row per impression (`impression_features`): history length,
  candidates per impression, click-through rate, category and subcategory of the clicked item,
  title/abstract length, age and recent popularity of the clicked and the shown items, hour of
  day; plus two batch-level shares (`unseen_shares`): impressions of users and shown items the
  reference never had. Features a source cannot define (a positive-only log has no candidates
  and no click-through rate) are left out with the reason recorded.
- **item-text embeddings** (`embedding_drift`): backbone embeddings of the items new in the
  current batch against the reference's items, with Evidently's embedding drift methods;
- **predictions** (`prediction_drift`): the champion's scores on reference vs current candidates.

`drift_report` runs Evidently's `DataDriftPreset` on the feature frames and returns a
`DriftVerdict`; drift.html (features), drift_embeddings.html, drift_predictions.html and the
verdict drift.json are written to one folder. HTML stays local (a 100k-row report is several MB);
the verdict is what gets logged.

Evidently picks the per-column method by sample size: with <= 1000 reference rows it uses
statistical tests whose score is a p-value (drift when p < threshold, e.g. 0.05); above that it
uses distances (drift when distance >= threshold, e.g. 0.1). The per-column `drifted` flag is
read from Evidently's own test for that column (matched by metric id, never by position), and
`method` records which kind of score `score` is.

Why one module this long: the only module importing Evidently (one module per outside system,
docs/architecture.md).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from llmrec.data.context import history_lengths
from llmrec.data.contract import UNLABELED, Dataset
from llmrec.errors import ConfigError, DataError

log = logging.getLogger(__name__)

NUMERICAL_FEATURES = [
    "history_len", "n_candidates", "ctr", "clicked_title_len", "clicked_abstract_len",
    "clicked_item_age_h", "shown_item_age_h", "clicked_item_popularity", "shown_item_popularity", "hour",
]
CATEGORICAL_FEATURES = ["clicked_category", "clicked_subcategory"]
UNSEEN_FEATURES = ["unseen_users", "unseen_items"]
SIGNALS = ("features", "embedding", "prediction")
EMBEDDING_METHODS = ("mmd", "model")  # Ratio and Distance flag same-distribution samples untuned
NO_CLICK = "none"
OTHER = "other"  # categories too rare in the reference to test (see _pool_rare)
RARE = 5
UNKNOWN_ITEM = "unknown"
VALIDATE_FIRST = "validate the dataset first (llmrec.validation.validate_dataset)"
POSITIVE_ONLY = "positive-only log (no logged non-clicks)"
HTML_SAMPLE = 300  # rows per side in the embedding plot (Evidently's TSNE on its default sample is slow: bench/drift_speed)


# --- features ----------------------------------------------------------------------------------


@dataclass
class Features:
    """One row per impression (index: impression_id), and why the features not in `frame` are undefined."""

    frame: pd.DataFrame
    skipped: dict[str, str] = field(default_factory=dict)


def impression_features(dataset: Dataset, log: Dataset | None = None, lookback_hours: float = 24.0) -> Features:
    """The behaviour features drift looks at, one row per impression of `dataset`.

    `log` (default: `dataset`) is everything known, `dataset` included: derived histories (sources
    without explicit ones), item age and item popularity are counted in it, only before each impression.

    history_len, n_candidates, hour (UTC): int; ctr: clicks / labeled candidates (NaN if none labeled);
    clicked_title_len / clicked_abstract_len: mean word count of the clicked items' title / text;
    clicked_category / clicked_subcategory: of the first clicked item ("none" if no click);
    *_item_age_h: mean hours since the item's `published_at` (if the items have it) or else its first
    interaction in `log`, capped at `lookback_hours`; *_item_popularity: mean clicks the item got in the
    `lookback_hours` before the impression. Both are NaN in the first `lookback_hours` of the log (not
    enough past to count in). "clicked" averages over the impression's clicks, "shown" over all candidates.
    """
    if lookback_hours <= 0:
        raise ConfigError(f"lookback_hours must be > 0, got {lookback_hours}", where="drift.lookback_hours")
    _check_tables(dataset)
    log = log if log is not None else dataset
    imps = dataset.impressions.set_index("impression_id")
    inter = dataset.interactions
    meta = _item_meta(pd.concat([log.items, dataset.items]).drop_duplicates("item_id", keep="last"))
    rows = _interaction_rows(inter, meta, log, lookback_hours)
    clicked = rows[rows["label"] == 1]
    skipped = _undefined(dataset, meta)
    frame = pd.DataFrame(index=imps.index)
    frame["history_len"] = history_lengths(log, dataset.impressions).to_numpy()
    frame["n_candidates"] = inter.groupby("impression_id").size().reindex(imps.index, fill_value=0).astype("int64")
    labeled = inter[inter["label"] != UNLABELED]
    frame["ctr"] = labeled.groupby("impression_id")["label"].mean().reindex(imps.index).astype("float64")
    by_click = clicked.groupby("impression_id", sort=False)
    for name, column in (("clicked_title_len", "title_len"), ("clicked_abstract_len", "text_len"),
                         ("clicked_item_age_h", "age_h"), ("clicked_item_popularity", "popularity")):
        frame[name] = by_click[column].mean().reindex(imps.index).astype("float64")
    for name, column in (("clicked_category", "category"), ("clicked_subcategory", "subcategory")):
        first = by_click[column].first().reindex(imps.index).astype(object)
        frame[name] = first.where(first.notna(), NO_CLICK)
    by_shown = rows.groupby("impression_id", sort=False)
    frame["shown_item_age_h"] = by_shown["age_h"].mean().reindex(imps.index).astype("float64")
    frame["shown_item_popularity"] = by_shown["popularity"].mean().reindex(imps.index).astype("float64")
    frame["hour"] = pd.to_datetime(imps["timestamp"], utc=True).dt.hour.astype("int64")
    return Features(frame.drop(columns=[c for c in skipped if c in frame.columns]), skipped)


def _undefined(dataset: Dataset, meta: pd.DataFrame) -> dict[str, str]:
    """Features the source cannot define, with the reason."""
    out: dict[str, str] = {}
    if not dataset.source.logged_negatives:
        out.update({
            "n_candidates": f"{POSITIVE_ONLY}: every event is its own one-candidate impression",
            "ctr": f"{POSITIVE_ONLY}: the click-through rate is always 1",
            "shown_item_age_h": f"{POSITIVE_ONLY}: the shown items are the consumed ones (see clicked_item_age_h)",
            "shown_item_popularity": f"{POSITIVE_ONLY}: the shown items are the consumed ones (see clicked_item_popularity)",
        })
    used = meta.reindex(dataset.interactions["item_id"].unique())
    if not (used["text_len"] > 0).any():
        out["clicked_abstract_len"] = "the items have no text/abstract"
    for column in ("category", "subcategory"):
        if not (used[column].fillna("") != "").any():
            out[f"clicked_{column}"] = f"the items have no {column}"
    return out


def _item_meta(items: pd.DataFrame) -> pd.DataFrame:
    """Per item: title and text word counts, category, subcategory, published_at (NaT where unknown)."""
    items = items.set_index("item_id")

    def words(col: str) -> pd.Series:
        return items[col].fillna("").astype(str).str.split().str.len().astype("float64")

    text = words("text") if "text" in items else pd.Series(0.0, index=items.index)
    published = pd.to_datetime(items["published_at"], utc=True) if "published_at" in items else pd.NaT
    return pd.DataFrame({
        "title_len": words("title"),
        "text_len": text,
        "category": items["category"].fillna("").astype(str) if "category" in items else "",
        "subcategory": items["subcategory"].fillna("").astype(str) if "subcategory" in items else "",
        "published_at": published,
    }, index=items.index)


def _interaction_rows(inter: pd.DataFrame, meta: pd.DataFrame, log: Dataset, lookback_hours: float) -> pd.DataFrame:
    """Every interaction of the slice with its item's text lengths, category, age and recent popularity.

    Age (capped at `lookback_hours`) and popularity (clicks in the `lookback_hours` before) need that
    much log before the interaction; where the log starts later they are unknown (NaN), not 0.
    """
    items = inter["item_id"]
    stamp = pd.to_datetime(inter["timestamp"], utc=True)
    first = log.interactions.groupby("item_id", sort=False)["timestamp"].min()  # <= t: the log holds the slice
    born = pd.to_datetime(items.map(first), utc=True)
    published = pd.to_datetime(items.map(meta["published_at"]), utc=True)
    born = born.where(published.isna(), published)
    age = ((stamp - born).dt.total_seconds() / 3600).clip(lower=0, upper=lookback_hours)
    clicks = log.interactions.loc[log.interactions["label"] == 1, ["item_id", "timestamp"]]
    popularity = pd.Series(_trailing_counts(clicks, items, stamp, lookback_hours), index=inter.index)
    start = pd.to_datetime(log.impressions["timestamp"], utc=True).min()
    observed = stamp >= start + pd.Timedelta(hours=lookback_hours)
    return pd.DataFrame({
        "impression_id": inter["impression_id"].to_numpy(),
        "label": inter["label"].to_numpy(),
        "title_len": items.map(meta["title_len"]).to_numpy(dtype="float64"),
        "text_len": items.map(meta["text_len"]).to_numpy(dtype="float64"),
        "category": _labels(items.map(meta["category"])),
        "subcategory": _labels(items.map(meta["subcategory"])),
        "age_h": age.where(observed | published.notna()).to_numpy(dtype="float64"),
        "popularity": popularity.where(observed).to_numpy(dtype="float64"),
    })


def _labels(values: pd.Series) -> np.ndarray:
    """Category labels with unknown items and blanks as "unknown"."""
    values = values.astype(object)
    return values.where(values.notna() & (values != ""), UNKNOWN_ITEM).to_numpy()


def _seconds(stamps: pd.Series) -> np.ndarray:
    return pd.to_datetime(stamps, utc=True).astype("int64").to_numpy() // 1_000_000_000


def _trailing_counts(events: pd.DataFrame, items: pd.Series, stamps: pd.Series, hours: float) -> np.ndarray:
    """For each (item, time): events of that item in [time - hours, time), by binary search on (item, time) keys."""
    if events.empty or items.empty:
        return np.zeros(len(items))
    window = int(hours * 3600)
    codes = pd.Index(events["item_id"].unique())
    ev_t, q_t = _seconds(events["timestamp"]), _seconds(stamps)
    t0 = min(ev_t.min(), q_t.min()) - window  # every shifted time and time - window is >= 0
    span = int(max(ev_t.max(), q_t.max()) - t0) + 1  # keys of different items never overlap
    keys = np.sort(codes.get_indexer(events["item_id"]).astype("int64") * span + (ev_t - t0))
    q_code = codes.get_indexer(items)
    q_key = np.where(q_code >= 0, q_code, 0).astype("int64") * span + (q_t - t0)
    counts = np.searchsorted(keys, q_key, "left") - np.searchsorted(keys, q_key - window, "left")
    return np.where(q_code >= 0, counts, 0).astype("float64")


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


def unseen_shares(reference: Dataset, current: Dataset, margin: float = 0.2) -> dict[str, dict]:
    """Share of current impressions by users, and of shown items, that the reference never had.

    Some novelty is normal (news items live a day or two), so each share is compared with the
    reference's own: its latest part (as long as the current batch, at most half of it) against the
    rest. Drift when the current share exceeds that by more than `margin`.
    """
    if current.impressions.empty or reference.impressions.empty:
        return {name: _skipped("skipped: no impressions on one side") for name in UNSEEN_FEATURES}
    ref_ts, cur_ts = reference.impressions["timestamp"], current.impressions["timestamp"]
    length = min(cur_ts.max() - cur_ts.min(), (ref_ts.max() - ref_ts.min()) / 2)
    later = ref_ts >= ref_ts.max() - length
    early_ids = reference.impressions.loc[~later, "impression_id"]
    late_ids = reference.impressions.loc[later, "impression_id"]
    base = None if early_ids.empty else _unseen(reference.restrict(early_ids), reference.restrict(late_ids))
    cur = _unseen(reference, current)
    out = {}
    for name in UNSEEN_FEATURES:
        baseline = None if base is None else base[name]
        limit = None if baseline is None else min(1.0, baseline + margin)
        drifted = bool(limit is not None and cur[name] > limit)
        span = f"{length.total_seconds() / 3600:.0f} h"
        out[name] = {
            "drifted": drifted,
            "score": cur[name],
            "method": f"share not in the reference; the reference's own over its last {span}: "
            + ("n/a" if baseline is None else f"{baseline:.3f}") + f", margin {margin}",
            "threshold": limit,
            "baseline": baseline,
        }
    return out


def _unseen(known: Dataset, new: Dataset) -> dict[str, float]:
    users = new.impressions["user_id"].isin(set(known.impressions["user_id"]))
    items = new.interactions["item_id"].isin(set(known.interactions["item_id"]))
    return {"unseen_users": float(1 - users.mean()), "unseen_items": float(1 - items.mean()) if len(items) else 0.0}


# --- verdict -----------------------------------------------------------------------------------


@dataclass
class DriftVerdict:
    """Outcome of `drift_report`: per-feature drift, share drifted, embedding and prediction drift."""

    drift_detected: bool
    share_drifted: float
    threshold: float
    features: dict[str, dict] = field(default_factory=dict)
    drifted_features: list[str] = field(default_factory=list)
    n_reference: int = 0
    n_current: int = 0
    html_path: str | None = None
    embedding: dict | None = None       # embedding_drift(...) or None when not computed
    prediction: dict | None = None      # prediction_drift(...) or None when not computed
    signals: dict[str, bool] = field(default_factory=dict)  # features / embedding / prediction: drifted?
    decide_on: list[str] = field(default_factory=lambda: list(SIGNALS))
    reasons: list[str] = field(default_factory=list)
    report_columns: list[str] = field(default_factory=list)  # the features Evidently compared (drift.html); the rest are llmrec's

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
            f"reference {self.n_reference} impressions, current {self.n_current})"
            + (f"; {'; '.join(self.reasons)}" if self.reasons else "")
        ]
        if self.report_columns:  # drift.html counts only what Evidently compared
            ours = [n for n in scored if n not in self.report_columns]
            in_report = sum(bool(self.features[n]["drifted"]) for n in self.report_columns if n in self.features)
            lines.append(
                f"  (Evidently's drift.html compares {len(self.report_columns)} of them, {in_report} drifted"
                + (f"; llmrec adds {', '.join(ours)}, {sum(bool(self.features[n]['drifted']) for n in ours)} drifted" if ours else "")
                + ")"
            )
        for name, f in self.features.items():
            mark = "DRIFT" if f["drifted"] else "ok"
            lines.append(f"  {mark:<5} {name:<24} {_fmt(f['score']):>9}  ({f['method']}, threshold {_fmt(f['threshold'])})")
        for name, signal in (("embeddings", self.embedding), ("predictions", self.prediction)):
            if signal is None:
                continue
            if signal.get("skipped"):
                lines.append(f"  n/a   {name:<24} {'':>9}  ({signal['skipped']})")
                continue
            mark = "DRIFT" if signal["drifted"] else "ok"
            lines.append(
                f"  {mark:<5} {name:<24} {_fmt(signal['score']):>9}  ({signal['method']}, threshold "
                f"{_fmt(signal['threshold'])}; reference {signal['n_reference']}, current {signal['n_current']})"
            )
        return "\n".join(lines)


def _fmt(value: Any) -> str:
    return "n/a" if value is None or _isnan(value) else f"{value:.3g}"


# --- report ------------------------------------------------------------------------------------


def drift_report(
    reference: Features | pd.DataFrame,
    current: Features | pd.DataFrame,
    out_dir: str | Path,
    share_threshold: float = 0.5,
    *,
    extra: Mapping[str, dict] | None = None,
    embedding: dict | None = None,
    prediction: dict | None = None,
    decide_on: Sequence[str] = SIGNALS,
    ignore: Sequence[str] = (),
) -> DriftVerdict:
    """Compare current with reference feature frames; write drift.html and drift.json to out_dir.

    `extra`: feature results computed outside the frames (`unseen_shares`), counted in the share.
    `ignore`: features left out of the comparison (recorded as skipped).
    `embedding` / `prediction`: results of `embedding_drift` / `prediction_drift`.
    Drift is detected when any signal named in `decide_on` drifts: "features" (share of drifted
    features >= share_threshold), "embedding", "prediction".
    """
    unknown = sorted(set(decide_on) - set(SIGNALS))
    if unknown:
        raise ConfigError(f"unknown drift signals {unknown}", where="drift.decide_on", fix=f"use some of {list(SIGNALS)}")
    ref, cur = _as_features(reference), _as_features(current)
    skipped = {**ref.skipped, **{k: v for k, v in cur.skipped.items() if k not in ref.skipped}}
    skipped.update({name: "ignored (drift.ignore)" for name in ignore if name not in skipped})
    ref_frame, cur_frame = _common_columns(ref.frame, cur.frame, skipped)
    numerical, categorical = _feature_columns(ref_frame, cur_frame)
    usable, empty = _usable(ref_frame, cur_frame, numerical + categorical)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    num = [c for c in numerical if c in usable]
    cat = [c for c in categorical if c in usable]
    ref_frame, cur_frame = _pool_rare(ref_frame, cur_frame, cat)
    snapshot = _run_report(ref_frame, cur_frame, num, cat, share_threshold)
    features = _column_results(snapshot.dict(), usable)
    scored = list(usable)
    for name, result in (extra or {}).items():
        if name in skipped:
            continue
        features[name] = result
        if result.get("score") is not None and result.get("threshold") is not None:
            scored.append(name)
    features.update({name: _skipped(why) for name, why in {**empty, **skipped}.items()})
    html = out_dir / "drift.html"
    snapshot.save_html(str(html))
    verdict = _verdict(features, scored, share_threshold, len(ref_frame), len(cur_frame), str(html),
                       embedding, prediction, list(decide_on))
    verdict.report_columns = list(usable)
    (out_dir / "drift.json").write_text(json.dumps(verdict.to_dict(), indent=2))
    log.info("drift report in %.1f s: %s", time.perf_counter() - start, verdict.summary().splitlines()[0])
    return verdict


def _as_features(value: Features | pd.DataFrame) -> Features:
    return value if isinstance(value, Features) else Features(value)


def _common_columns(
    reference: pd.DataFrame, current: pd.DataFrame, skipped: dict[str, str]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Both frames cut to the features neither side skipped."""
    for name, frame in (("reference", reference), ("current", current)):
        if not isinstance(frame, pd.DataFrame) or frame.empty:
            raise DataError(
                f"the {name} data for drift is empty",
                where=f"drift_report({name}=...)",
                fix="give both periods at least one impression (check the date split and the data path)",
            )
    missing = [c for c in reference.columns if c not in current.columns and c not in skipped]
    if missing:
        raise DataError(f"the current data lacks the columns {missing}", fix="compute both frames the same way")
    keep = [c for c in reference.columns if c not in skipped]
    return reference[keep], current[keep]


def _pool_rare(
    reference: pd.DataFrame, current: pd.DataFrame, columns: list[str], min_count: int = RARE
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Categories with fewer than `min_count` reference rows (new ones included) become "other" on both sides.

    Evidently's chi-square test (<= 1000 rows) divides by the reference counts: one category the
    reference never had gives p = 0, so any rare subcategory would read as drift.
    """
    reference, current = reference.copy(), current.copy()
    for col in columns:
        counts = reference[col].value_counts()
        frequent = set(counts[counts >= min_count].index)
        for frame in (reference, current):
            values = frame[col].astype(object)
            frame[col] = values.where(values.isna() | values.isin(frequent), OTHER)
    return reference, current


def _feature_columns(reference: pd.DataFrame, current: pd.DataFrame) -> tuple[list[str], list[str]]:
    """Numerical and categorical columns of the reference (which current must also have)."""
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
    with np.errstate(divide="ignore"):  # chi-square of a category the reference lacks: p = 0, i.e. drift
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
    features: dict[str, dict],
    scored: list[str],
    share_threshold: float,
    n_ref: int,
    n_cur: int,
    html: str,
    embedding: dict | None,
    prediction: dict | None,
    decide_on: list[str],
) -> DriftVerdict:
    drifted = [c for c in features if c in scored and features[c]["drifted"]]
    share = len(drifted) / len(scored)
    signals = {
        "features": share >= share_threshold,  # Evidently's share test fails at share >= drift_share
        "embedding": bool(embedding and embedding.get("drifted")),
        "prediction": bool(prediction and prediction.get("drifted")),
    }
    reasons = []
    if signals["features"]:
        reasons.append(f"{len(drifted)}/{len(scored)} features drifted ({', '.join(drifted)})")
    if signals["embedding"]:
        reasons.append(f"item-text embeddings drifted ({embedding['method']} score {embedding['score']:.3f})")  # type: ignore[index]
    if signals["prediction"]:
        reasons.append(f"champion scores drifted ({prediction['method']} {prediction['score']:.3g})")  # type: ignore[index]
    return DriftVerdict(
        drift_detected=any(signals[s] for s in decide_on),
        share_drifted=share,
        threshold=share_threshold,
        features=features,
        drifted_features=drifted,
        n_reference=n_ref,
        n_current=n_cur,
        html_path=html,
        embedding=embedding,
        prediction=prediction,
        signals=signals,
        decide_on=decide_on,
        reasons=reasons,
    )


# --- embeddings and predictions -----------------------------------------------------------------


def embedding_drift(
    reference: np.ndarray,
    current: np.ndarray,
    out_dir: str | Path | None = None,
    *,
    method: str = "mmd",
    threshold: float | None = None,
    min_items: int = 20,
    html: bool = True,
) -> dict[str, Any]:
    """Drift of current vs reference embedding rows (e.g. items new in the batch vs the reference's items).

    Evidently's embedding drift methods, each run as a test against the reference's own variation:
    - "mmd" (default): MMDDriftMethod, drift when the squared maximum mean discrepancy is above the
      95th percentile of reference-only bootstrap samples (Evidently's default percentile, 5 %,
      flags nearly every batch); `threshold` is unused.
    - "model": ModelDriftMethod, a linear classifier told to separate the two sides; drift when its
      held-out ROC AUC beats 95 % of random guesses and exceeds `threshold` (default 0.55). It finds
      a shift of every item, not a new topic among old ones (it missed esports on the generator).
    RatioDriftMethod (threshold 0.2) and DistanceDriftMethod (threshold 0.2) are not offered: untuned,
    they flag samples of one distribution (ratio: 0.38 of 8 dimensions "drifted" for 300 vs 300 rows).
    Deterministic (the methods are seeded). Subsample before calling: MMD builds an (n+m)^2 kernel.
    With `out_dir` and `html`, Evidently's EmbeddingsDrift report goes to drift_embeddings.html.
    """
    if method not in EMBEDDING_METHODS:
        raise ConfigError(f"unknown embedding drift method {method!r}", where="drift.embedding_method",
                          fix=f"use one of {list(EMBEDDING_METHODS)}")
    reference, current = np.asarray(reference, dtype="float64"), np.asarray(current, dtype="float64")
    sizes = {"n_reference": int(len(reference)), "n_current": int(len(current))}
    if min(len(reference), len(current)) < min_items:
        return {"drifted": False, "skipped": f"too few items to compare ({sizes['n_reference']} reference, "
                f"{sizes['n_current']} new; at least {min_items} each)", **sizes}
    from evidently.metrics.embeddings import MMDDriftMethod, ModelDriftMethod

    columns = [f"e{i}" for i in range(reference.shape[1])]
    ref, cur = pd.DataFrame(reference, columns=columns), pd.DataFrame(current, columns=columns)
    start = time.perf_counter()
    drift_method: Any
    if method == "mmd":
        drift_method = MMDDriftMethod(bootstrap=True, quantile_probability=0.95)
        what = "mmd (squared MMD vs the 95th percentile of reference bootstraps)"
    else:
        threshold = 0.55 if threshold is None else threshold
        drift_method = ModelDriftMethod(threshold=threshold, bootstrap=True, quantile_probability=0.95)
        what = "model (ROC AUC of a reference-vs-current classifier)"
    score, significant, _ = drift_method(cur.copy(), ref.copy())  # the methods add columns to their inputs
    drifted = bool(significant) and (method != "model" or score > threshold)  # type: ignore[operator]
    result: dict[str, Any] = {
        "drifted": drifted, "score": float(score), "method": what, "threshold": threshold,
        "significant": bool(significant), **sizes, "html_path": None,
    }
    if out_dir is not None and html:
        result["html_path"] = str(_embedding_html(ref, cur, drift_method, Path(out_dir) / "drift_embeddings.html"))
    log.info("embedding drift in %.1f s: score %.4g, drifted %s", time.perf_counter() - start, score, drifted)
    return result


@contextlib.contextmanager
def _small_embedding_plot() -> Iterator[None]:
    """Evidently's embedding plot runs TSNE on 2500 rows per side (~90 s); a few hundred show the same picture."""
    from evidently.legacy.metrics.data_drift import embeddings_drift

    before = embeddings_drift.SAMPLE_CONSTANT
    embeddings_drift.SAMPLE_CONSTANT = HTML_SAMPLE
    try:
        yield
    finally:
        embeddings_drift.SAMPLE_CONSTANT = before


def _embedding_html(ref: pd.DataFrame, cur: pd.DataFrame, drift_method: Any, path: Path) -> Path:
    from evidently import DataDefinition, Report
    from evidently import Dataset as EvDataset
    from evidently.metrics import EmbeddingsDrift

    definition = DataDefinition(numerical_columns=list(ref.columns), embeddings={"item_text": list(ref.columns)})
    report = Report([EmbeddingsDrift(embeddings_name="item_text", drift_method=drift_method)])
    with _small_embedding_plot():
        snapshot = report.run(
            current_data=EvDataset.from_pandas(cur, data_definition=definition),
            reference_data=EvDataset.from_pandas(ref, data_definition=definition),
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    snapshot.save_html(str(path))
    return path


def prediction_drift(reference: np.ndarray, current: np.ndarray, out_dir: str | Path) -> dict[str, Any]:
    """Drift of the champion's scores on current vs reference candidates (Evidently ValueDrift on one column).

    The method is Evidently's choice by size, as for the features: K-S p-value up to 1000 reference
    scores, normed Wasserstein distance above (score a few thousand candidates to judge by effect size).
    drift_predictions.html goes to out_dir.
    """
    reference, current = np.asarray(reference, dtype="float64"), np.asarray(current, dtype="float64")
    sizes = {"n_reference": int(len(reference)), "n_current": int(len(current))}
    if min(len(reference), len(current)) < 2:
        return {"drifted": False, "skipped": "fewer than 2 scored candidates on one side", **sizes}
    ref, cur = pd.DataFrame({"score": reference}), pd.DataFrame({"score": current})
    snapshot = _run_report(ref, cur, ["score"], [], 0.5)
    result = _column_results(snapshot.dict(), ["score"])["score"]
    path = Path(out_dir) / "drift_predictions.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    snapshot.save_html(str(path))
    quantiles = {f"{side}_quantiles": [float(q) for q in np.quantile(values, [0.1, 0.5, 0.9])]
                 for side, values in (("reference", reference), ("current", current))}
    return {**result, **sizes, **quantiles, "html_path": str(path)}


def _isnan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return str(value)
