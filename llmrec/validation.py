"""Data-contract checks with Great Expectations (the only module that imports it).

`validate_dataset` runs one expectation suite per canonical table in an ephemeral GX context
(plus two suites on derived reference columns, see "referential integrity" below), writes Data
Docs HTML to `report_dir/data_docs/` and a JSON verdict to `report_dir/validation.json`.

Every expectation carries `meta = {"table", "severity", "column"}`, so results are read back
by their own configuration, never by position. Severity "error" fails the validation,
"warning" is only reported.

Referential integrity (interaction item_id in items, interaction impression_id in impressions,
every history entry in items) is computed with pandas `isin`; GX then checks the derived column
of dangling values with `expect_column_values_to_be_null`, and the failure is reported as
`expect_column_values_to_be_in_set` on the original table and column. Passing the id set to
GX's own in-set expectation was several times slower overall (GX re-serialises the value set hundreds
of times per run; bench/ingest_validate).

Why one module this long: the only module importing Great Expectations (one module per outside system,
docs/architecture.md).
"""

from __future__ import annotations

import json
import logging
import numbers
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from llmrec.data.contract import (
    IMPRESSION_COLUMNS,
    INTERACTION_COLUMNS,
    ITEM_COLUMNS,
    OPTIONAL_ITEM_COLUMNS,
    UNLABELED,
    Dataset,
)
from llmrec.errors import DataError, ValidationFailed

log = logging.getLogger(__name__)

ERROR = "error"
WARNING = "warning"
SITE_NAME = "llmrec_data_docs"
CTR_RANGE = (0.005, 0.5)
MAX_EMPTY_HISTORY_SHARE = 0.5
MAX_NO_CLICK_SHARE = 0.5         # impressions without any click (logged-negative sources)
MAX_ONE_EVENT_USER_SHARE = 0.5   # users with a single event cannot be trained or evaluated on
EARLIEST = pd.Timestamp("1990-01-01", tz="UTC")
N_EXAMPLES = 5
RESULT_FORMAT = {"result_format": "SUMMARY", "partial_unexpected_count": 20}  # deduplicated to N_EXAMPLES


@dataclass
class Failure:
    """One failed expectation."""

    table: str
    expectation: str
    column: str | None
    severity: str  # "error" | "warning"
    unexpected_count: int
    examples: list = field(default_factory=list)
    rows: list[int] = field(default_factory=list)  # first offending rows (0-based) of the canonical table


@dataclass
class ValidationResult:
    """Outcome of `validate_dataset`."""

    success: bool
    failures: list[Failure]
    statistics: dict
    docs_path: str | None = None

    @property
    def errors(self) -> list[Failure]:
        return [f for f in self.failures if f.severity == ERROR]

    @property
    def warnings(self) -> list[Failure]:
        return [f for f in self.failures if f.severity == WARNING]

    def summary(self) -> str:
        """A short table of the failed expectations with a few offending values."""
        n_eval = sum(s["evaluated"] for s in self.statistics.values())
        head = "passed" if self.success else "FAILED"
        lines = [
            f"data validation {head}: {len(self.errors)} error(s), {len(self.warnings)} warning(s), "
            f"{n_eval} expectation(s) evaluated"
        ]
        if not self.failures:
            return lines[0]
        rows = [("severity", "table", "expectation", "column", "unexpected", "rows", "examples")]
        for f in sorted(self.failures, key=lambda f: (f.severity != ERROR, f.table)):
            where = ", ".join(str(r) for r in f.rows[:N_EXAMPLES]) + (", ..." if len(f.rows) > N_EXAMPLES else "")
            rows.append(
                (f.severity, f.table, f.expectation, f.column or "-", str(f.unexpected_count), where or "-", _short(f.examples))
            )
        widths = [max(len(r[i]) for r in rows) for i in range(6)]
        for r in rows:
            lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(r[:6], widths)) + "  " + r[6])
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """JSON-able form."""
        return {
            "success": self.success,
            "n_errors": len(self.errors),
            "n_warnings": len(self.warnings),
            "failures": [_jsonable(asdict(f)) for f in self.failures],
            "statistics": self.statistics,
            "docs_path": self.docs_path,
            "summary": self.summary(),
        }

    def raise_for_errors(self) -> None:
        """Raise `ValidationFailed` when an error-severity expectation failed."""
        if not self.success:
            raise ValidationFailed(
                f"the dataset breaks the data contract ({len(self.errors)} failed check(s))",
                summary=self.summary(),
                report_path=self.docs_path,
            )


def validate_dataset(dataset: Dataset, report_dir: str | Path, bad_rows: dict | None = None) -> ValidationResult:
    """Validate the three canonical tables; write Data Docs and validation.json under report_dir.

    `bad_rows` ({"rows", "read", "share", "max_share"}, from the ingest) adds the source rows left out as bad:
    an error above max_share, a warning when any was left out.
    """
    _checked(dataset)
    report_dir = Path(report_dir).resolve()  # GX needs an absolute docs path
    report_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    gx, gxe = _import_gx()
    docs_dir = report_dir / "data_docs"
    if docs_dir.exists():  # our own output: old validation pages would otherwise pile up in the index
        shutil.rmtree(docs_dir)
    ctx = _context(gx, docs_dir)
    source = ctx.data_sources.add_pandas(name="llmrec")
    results: list[Any] = []
    by_suite: dict[str, list[Failure]] = {}
    for spec in [*_suites(gxe, dataset), *_bad_row_suites(gxe, bad_rows)]:
        suite_results = _run_suite(gx, ctx, source, spec)
        results.extend(suite_results)
        by_suite[spec.name] = _collect(suite_results, None).failures
    docs = _build_docs(ctx, docs_dir)
    outcome = _collect(results, docs)
    if docs:
        _readable_offline(docs_dir, outcome, by_suite)
    (report_dir / "validation.json").write_text(json.dumps(outcome.to_dict(), indent=2))
    log.info("validated dataset in %.1f s: %s", time.perf_counter() - start, outcome.summary().splitlines()[0])
    return outcome


def _checked(dataset: Dataset) -> None:
    for name in ("items", "impressions", "interactions"):
        if not isinstance(getattr(dataset, name, None), pd.DataFrame):
            raise DataError(f"dataset.{name} is not a pandas DataFrame", fix="build a llmrec.data.contract.Dataset")


def _run_suite(gx: Any, ctx: Any, source: Any, spec: _Suite) -> list[Any]:
    batch = source.add_dataframe_asset(name=spec.name).add_batch_definition_whole_dataframe("whole")
    suite = ctx.suites.add(gx.ExpectationSuite(name=spec.name, expectations=spec.expectations))
    vd = ctx.validation_definitions.add(gx.ValidationDefinition(name=spec.name, data=batch, suite=suite))
    return list(vd.run(batch_parameters={"dataframe": spec.frame}, result_format=RESULT_FORMAT).results)


# --- Great Expectations set-up -------------------------------------------------------------


def _import_gx() -> tuple[Any, Any]:
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    gx_log = logging.getLogger("great_expectations")
    if gx_log.level == logging.NOTSET:  # its import logs hundreds of INFO lines about its own docs
        gx_log.setLevel(logging.WARNING)
    import great_expectations as gx
    import great_expectations.expectations as gxe

    return gx, gxe


def _context(gx: Any, docs_dir: Path) -> Any:
    """An ephemeral context (nothing persisted, no name collisions) with our own docs site."""
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    ctx.add_data_docs_site(
        site_name=SITE_NAME,
        site_config={
            "class_name": "SiteBuilder",
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        },
    )
    return ctx


def _build_docs(ctx: Any, docs_dir: Path) -> str | None:
    try:
        ctx.build_data_docs(site_names=[SITE_NAME])
    except Exception as exc:  # docs are a by-product: never hide the verdict behind them
        log.warning("could not build Data Docs in %s: %s", docs_dir, exc)
    index = docs_dir / "index.html"
    return str(index) if index.exists() else None


def _status(failures: list[Failure]) -> str:
    """llmrec's verdict: warnings do not fail (Great Expectations calls a suite with any failed expectation Failed)."""
    errors = sum(f.severity == ERROR for f in failures)
    warnings = len(failures) - errors
    if errors:
        return f"FAILED: {errors} error(s)" + (f", {warnings} warning(s)" if warnings else "")
    return "passed" + (f", {warnings} warning(s)" if warnings else "")


_BANNER = (
    '<div style="font-family:sans-serif;border:2px solid #888;padding:12px 16px;margin:12px;background:#fff;color:#000">'
    "{body}</div>"
)


def _readable_offline(docs_dir: Path, outcome: ValidationResult, by_suite: dict[str, list[Failure]]) -> None:
    """Data Docs load their styles and the index tables' code from CDNs, so offline the index is blank, and a suite
    with a failed warning reads "Failed". Put llmrec's verdict (and, on the index, plain links to every page) at the
    top of each page, in HTML that needs nothing from the network."""
    import html

    pages = {name: sorted((docs_dir / "validations" / name).rglob("*.html")) for name in by_suite}
    note = ("llmrec: warning-severity expectations do not fail the data (Great Expectations' own status counts "
            "every expectation). The styled tables below need JavaScript from CDNs; offline, use these links.")
    items = "".join(
        f'<li><a href="{html.escape(page.relative_to(docs_dir).as_posix())}">{html.escape(name)}</a>: '
        f"{html.escape(_status(failures))}</li>"
        for name, failures in by_suite.items() for page in pages[name][-1:]
    )
    head = f"<b>data validation {html.escape(_status(outcome.failures))}</b>"
    _insert_after_body(docs_dir / "index.html", _BANNER.format(body=f"{head}<p>{note}</p><ul>{items}</ul>"))
    for name, failures in by_suite.items():
        for page in pages[name]:
            body = f"<b>llmrec: {html.escape(name)} {html.escape(_status(failures))}</b> (warnings do not fail the data)"
            _insert_after_body(page, _BANNER.format(body=body))


def _insert_after_body(page: Path, block: str) -> None:
    text = page.read_text(encoding="utf-8")
    at = text.find("<body")
    at = text.find(">", at) + 1 if at >= 0 else 0
    page.write_text(text[:at] + block + text[at:], encoding="utf-8")


# --- the tables and their expectations -------------------------------------------------------


@dataclass
class _Suite:
    """One GX asset + suite: the frame to validate and what to expect of it."""

    name: str
    frame: pd.DataFrame
    expectations: list = field(default_factory=list)


def _suites(gxe: Any, dataset: Dataset) -> list[_Suite]:
    items, imps, inter = dataset.items, dataset.impressions, dataset.interactions
    return [
        _Suite("items", items, _item_expectations(gxe, items)),
        _Suite("impressions", imps, _impression_expectations(gxe, imps, dataset.source.explicit_history)),
        _Suite("interactions", inter, _interaction_expectations(gxe, inter, dataset.source.logged_negatives)),
        *_reference_suites(gxe, dataset),
        *_distribution_suites(gxe, dataset),
    ]


def _meta(table: str, severity: str = ERROR, column: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"table": table, "severity": severity, "column": column, **extra}


def _columns(gxe: Any, table: str, expected: list[str]) -> list:
    """The exact column set, and at least one row."""
    return [
        gxe.ExpectTableColumnsToMatchSet(column_set=expected, exact_match=True, meta=_meta(table)),
        gxe.ExpectTableRowCountToBeBetween(min_value=1, meta=_meta(table)),
    ]


def _not_null(gxe: Any, table: str, frame: pd.DataFrame, columns: list[str], severity: str = ERROR) -> list:
    return [
        gxe.ExpectColumnValuesToNotBeNull(column=c, meta=_meta(table, severity, c))
        for c in columns
        if c in frame.columns
    ]


def _item_expectations(gxe: Any, items: pd.DataFrame) -> list:
    t = "items"
    expected = ITEM_COLUMNS + [c for c in OPTIONAL_ITEM_COLUMNS if c in items.columns]
    out = _columns(gxe, t, expected) + _not_null(gxe, t, items, ["item_id", "title"])
    out += _not_null(gxe, t, items, ["text", "category", "subcategory"], WARNING)
    if "item_id" in items.columns:
        out.append(gxe.ExpectColumnValuesToBeUnique(column="item_id", meta=_meta(t, column="item_id")))
    if "title" in items.columns:
        out.append(gxe.ExpectColumnValuesToBeOfType(column="title", type_="str", meta=_meta(t, column="title")))
        out.append(gxe.ExpectColumnValueLengthsToBeBetween(column="title", min_value=1, meta=_meta(t, column="title")))
    return out


def _timestamp_range(gxe: Any, table: str, frame: pd.DataFrame) -> list:
    """Timestamps between 1990 and now: later ones cannot have been logged yet."""
    if "timestamp" not in frame.columns:
        return []
    now = pd.Timestamp.now(tz="UTC")
    return [
        gxe.ExpectColumnValuesToBeBetween(
            column="timestamp",
            min_value=EARLIEST,
            max_value=now,
            meta=_meta(table, column="timestamp"),
            notes=f"timestamps must lie between {EARLIEST:%Y-%m-%d} and the validation time ({now:%Y-%m-%d %H:%M} UTC)",
        )
    ]


def _impression_expectations(gxe: Any, imps: pd.DataFrame, explicit_history: bool = True) -> list:
    t = "impressions"
    out = _columns(gxe, t, IMPRESSION_COLUMNS) + _not_null(gxe, t, imps, IMPRESSION_COLUMNS)
    out += _timestamp_range(gxe, t, imps)
    if "impression_id" in imps.columns:
        out.append(gxe.ExpectColumnValuesToBeUnique(column="impression_id", meta=_meta(t, column="impression_id")))
    if "history" in imps.columns and explicit_history:
        out.append(
            gxe.ExpectColumnValueLengthsToBeBetween(
                column="history",
                min_value=1,
                mostly=1 - MAX_EMPTY_HISTORY_SHARE,
                meta=_meta(t, WARNING, "history"),
                notes=f"warning: more than {MAX_EMPTY_HISTORY_SHARE:.0%} of the impressions have an empty history",
            )
        )
    return out


def _interaction_expectations(gxe: Any, inter: pd.DataFrame, logged_negatives: bool = True) -> list:
    t = "interactions"
    cols = set(inter.columns)
    out = _columns(gxe, t, INTERACTION_COLUMNS) + _not_null(gxe, t, inter, INTERACTION_COLUMNS)
    out += _timestamp_range(gxe, t, inter)
    if "label" in cols:
        labels = [UNLABELED, 0, 1]
        ints = ["int8", "int16", "int32", "int64"]
        out.append(gxe.ExpectColumnValuesToBeInTypeList(column="label", type_list=ints, meta=_meta(t, column="label")))
        out.append(gxe.ExpectColumnValuesToBeInSet(column="label", value_set=labels, meta=_meta(t, column="label")))
    if {"impression_id", "item_id"} <= cols:
        pair = ["impression_id", "item_id"]
        out.append(gxe.ExpectCompoundColumnsToBeUnique(column_list=pair, meta=_meta(t, column=",".join(pair))))
    if logged_negatives and "label" in cols and (inter["label"] != UNLABELED).any():
        out.append(_ctr_expectation(gxe))
    if not logged_negatives and "label" in cols:
        out.append(
            gxe.ExpectColumnValuesToBeInSet(
                column="label", value_set=[1], meta=_meta(t, column="label"),
                notes="a source without logged non-clicks holds positive events only (label 1)",
            )
        )
    if {"user_id", "item_id", "timestamp"} <= cols:
        event = ["user_id", "item_id", "timestamp"]
        out.append(
            gxe.ExpectCompoundColumnsToBeUnique(
                column_list=event, meta=_meta(t, WARNING, ",".join(event)),
                notes="warning: the same user-item event is logged more than once at the same instant",
            )
        )
    return out


def _ctr_expectation(gxe: Any) -> Any:
    from great_expectations.expectations.row_conditions import Column

    low, high = CTR_RANGE
    return gxe.ExpectColumnMeanToBeBetween(
        column="label",
        min_value=low,
        max_value=high,
        row_condition=Column("label") != UNLABELED,
        meta=_meta("interactions", WARNING, "label", check="click-through rate"),
        notes=f"warning: the click-through rate of labeled interactions is outside [{low}, {high}]",
    )


# --- referential integrity ----------------------------------------------------------------------
# GX's in-set expectations re-serialise their value set hundreds of times per run (pydantic v1
# `.dict()`): with 50k item ids + 40k impression ids a 1M-row run took 24 s instead of 6 s. So
# membership is computed with pandas, and GX checks a derived column holding the offending value
# where the reference dangles (null elsewhere): the check stays in Data Docs and in the results.


def _reference_suites(gxe: Any, dataset: Dataset) -> list[_Suite]:
    items, imps, inter = dataset.items, dataset.impressions, dataset.interactions
    suites = []
    inter_refs = {}
    if "item_id" in items.columns and "item_id" in inter.columns:
        inter_refs["item_id"] = ("items", _dangling(inter["item_id"], items["item_id"]))
    if "impression_id" in imps.columns and "impression_id" in inter.columns:
        inter_refs["impression_id"] = ("impressions", _dangling(inter["impression_id"], imps["impression_id"]))
    if inter_refs:
        suites.append(_reference_suite(gxe, "interaction_references", "interactions", inter_refs))
    if "item_id" in items.columns and "history" in imps.columns:
        entries = _explode_history(imps)
        refs = {"history": ("items", _dangling(entries, items["item_id"]))}
        suites.append(_reference_suite(gxe, "impression_history_references", "impressions", refs))
    return suites


def _reference_suite(gxe: Any, name: str, table: str, refs: dict[str, tuple[str, pd.Series]]) -> _Suite:
    frame = pd.DataFrame({f"{col}_not_in_{target}": values for col, (target, values) in refs.items()})
    expectations = [
        gxe.ExpectColumnValuesToBeNull(
            column=f"{col}_not_in_{target}",
            meta=_meta(table, column=col, expectation="expect_column_values_to_be_in_set", reference=target),
            notes=f"each {table}.{col} must exist in {target}; non-null values here are the ones that do not",
        )
        for col, (target, _) in refs.items()
    ]
    return _Suite(name, frame, expectations)


def _dangling(values: pd.Series, known: pd.Series) -> pd.Series:
    """The values not found in `known` (null where found, and where the value itself is null).

    The index is kept: it is the offending row of the table the values come from.
    """
    return values.where(~values.isin(known) & values.notna()).astype(object)


def _explode_history(impressions: pd.DataFrame) -> pd.Series:
    """Every history entry of every impression, one per row."""
    hist = impressions["history"].where(impressions["history"].notna(), "").astype(str).str.split()
    return hist.explode().dropna()  # index = the impression's row, repeated per entry


# --- distribution sanity ---------------------------------------------------------------------
# Shares over groups (impressions, users) are computed with pandas into one-row-per-group frames;
# GX checks them with `mostly`, so the share and the offending groups show in Data Docs.


def _distribution_suites(gxe: Any, dataset: Dataset) -> list[_Suite]:
    inter = dataset.interactions
    if not {"impression_id", "user_id", "label"} <= set(inter.columns) or inter.empty:
        return []
    suites = []
    labeled = inter[inter["label"] != UNLABELED]
    if dataset.source.logged_negatives and not labeled.empty:
        clicks = labeled.groupby("impression_id")["label"].max().rename("has_click").reset_index()
        suites.append(
            _Suite(
                "impression_clicks",
                clicks,
                [
                    gxe.ExpectColumnValuesToBeInSet(
                        column="has_click", value_set=[1], mostly=1 - MAX_NO_CLICK_SHARE,
                        meta=_meta("interactions", WARNING, "label", check="impressions without a click"),
                        notes=f"warning: more than {MAX_NO_CLICK_SHARE:.0%} of labeled impressions have no click",
                    )
                ],
            )
        )
    events = inter.loc[inter["label"] == 1].groupby("user_id").size().rename("events").reset_index()
    if not events.empty:
        suites.append(
            _Suite(
                "user_activity",
                events,
                [
                    gxe.ExpectColumnValuesToBeBetween(
                        column="events", min_value=2, mostly=1 - MAX_ONE_EVENT_USER_SHARE,
                        meta=_meta("interactions", WARNING, "user_id", check="users with a single positive event"),
                        notes=f"warning: more than {MAX_ONE_EVENT_USER_SHARE:.0%} of users have a single positive event",
                    )
                ],
            )
        )
    return suites


# --- source rows left out as bad (data.bad_rows: quarantine) -------------------------------------


def _bad_row_suites(gxe: Any, bad_rows: dict | None) -> list[_Suite]:
    """The share of source rows the ingest left out: at most data.max_bad_row_share (error); none (warning)."""
    if not bad_rows or not bad_rows.get("read"):
        return []
    frame = pd.DataFrame({"bad_rows": [int(bad_rows["rows"])], "bad_row_share": [float(bad_rows["share"])]})
    limit = float(bad_rows["max_share"])
    return [
        _Suite(
            "source_rows",
            frame,
            [
                gxe.ExpectColumnValuesToBeBetween(
                    column="bad_row_share", min_value=0, max_value=limit,
                    meta=_meta("source", ERROR, "bad_row_share", check="share of bad rows left out"),
                    notes=f"at most {limit:.2%} of the source rows may be bad (data.max_bad_row_share)",
                ),
                gxe.ExpectColumnValuesToBeBetween(
                    column="bad_rows", min_value=0, max_value=0,
                    meta=_meta("source", WARNING, "bad_rows", check="bad rows left out"),
                    notes=f"warning: {bad_rows['rows']} of {bad_rows['read']} source rows were bad and left out "
                    "(quarantine.csv beside the prepared tables lists them with line and reason)",
                ),
            ],
        )
    ]


# --- reading the results back ----------------------------------------------------------------


def _collect(results: list[Any], docs_path: str | None) -> ValidationResult:
    failures: list[Failure] = []
    stats: dict[str, dict[str, int]] = {}
    for res in results:
        meta = res.expectation_config.meta or {}
        table = meta.get("table", "?")
        entry = stats.setdefault(table, {"evaluated": 0, "successful": 0})
        entry["evaluated"] += 1
        if res.success:
            entry["successful"] += 1
        else:
            failures.append(_failure(res, meta))
    success = not any(f.severity == ERROR for f in failures)
    return ValidationResult(success=success, failures=failures, statistics=stats, docs_path=docs_path)


def _failure(res: Any, meta: dict[str, Any]) -> Failure:
    config = res.expectation_config
    detail = res.result or {}
    count, examples = _unexpected(detail)
    info = res.exception_info or {}
    if info.get("raised_exception"):
        examples = [str(info.get("exception_message", "exception"))[:200]]
    return Failure(
        table=meta.get("table", "?"),
        expectation=meta.get("expectation") or config.type,
        column=meta.get("column") or config.kwargs.get("column"),
        severity=meta.get("severity", ERROR),
        unexpected_count=count,
        examples=examples,
        rows=sorted({int(i) for i in detail.get("partial_unexpected_index_list") or [] if isinstance(i, numbers.Real)})[: 2 * N_EXAMPLES],
    )


def _unexpected(detail: dict[str, Any]) -> tuple[int, list]:
    """Count and a few examples from a GX result dict, whatever the expectation kind."""
    if "partial_unexpected_list" in detail:
        return int(detail.get("unexpected_count") or 0), _distinct(detail["partial_unexpected_list"])
    mismatched = (detail.get("details") or {}).get("mismatched")
    if mismatched:
        examples = [f"missing: {c}" for c in mismatched.get("missing", [])]
        examples += [f"unexpected: {c}" for c in mismatched.get("unexpected", [])]
        return len(examples), examples
    if "observed_value" in detail:
        return 0, [detail["observed_value"]]
    return 0, []


def _distinct(values: list) -> list:
    """The first few distinct values, in order (rows come as dicts, so compare by repr)."""
    seen: dict[str, Any] = {}
    for value in values:
        seen.setdefault(repr(value), value)
    return list(seen.values())[:N_EXAMPLES]


def _short(examples: list, width: int = 80) -> str:
    text = ", ".join(repr(e.item() if hasattr(e, "item") and not isinstance(e, (list, dict)) else e) for e in examples)
    return text if len(text) <= width else text[: width - 3] + "..."


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=_json_default))


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)
