"""Your own tables: an items file + an interactions file (CSV, TSV or Parquet) -> canonical tables.

`data.tables` in params.yaml (`TablesParams`) names the two files and maps each canonical column to
a column of the file. The interactions log comes in one of two shapes:

positive-only   no label column, or no label-0 row: every event (user, item, time) is one consumption
                and becomes its own one-candidate impression; negatives are sampled later.
impressions     label 0/1 plus impression_id: rows sharing an impression_id are the candidates shown
                together (same user, same time); label 0 = shown, not clicked.

Line numbers in errors count the header as line 1; for Parquet files they are row numbers from 1.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pv

from llmrec.config import TablesParams
from llmrec.data import checks
from llmrec.data.contract import INTERACTION_COLUMNS, ITEM_COLUMNS, Dataset, SourceInfo
from llmrec.errors import DataError

EXTENSIONS = (".csv", ".tsv", ".parquet")
# canonical key -> required?
ITEM_KEYS = {"item_id": True, "title": True, "text": False, "category": False, "subcategory": False}
INTERACTION_KEYS = {
    "user_id": True, "item_id": True, "timestamp": True, "label": False, "impression_id": False, "rating": False
}
LABELS = {"1": 1, "0": 0, "1.0": 1, "0.0": 0, "true": 1, "false": 0, "yes": 1, "no": 0}
MS_THRESHOLD = 1e11  # epoch numbers above this are milliseconds (1e11 s is the year 5138)
_OFFSET = r"[T ]\d\d.*(?:[zZ]|[+-]\d\d(?::?\d\d)?)$"  # ISO text with a UTC offset after the time
_FIX_FILE = "use UTF-8 .csv / .tsv with a header row, or .parquet; see docs/your-data.md"
_FIX_TIME = "use ISO-8601 text (2024-05-01T12:00:00Z) or epoch seconds/ms; see data.tables.timestamp_unit"


def is_tables_folder(folder: Path, cfg: TablesParams) -> bool:
    return (Path(folder) / cfg.items).is_file() and (Path(folder) / cfg.interactions).is_file()


def _line_numbers(data: bytes, n_rows: int, sep: str) -> np.ndarray:
    """Source line of each data row, skipping blank lines as the parsers do (vectorised)."""
    buf = np.frombuffer(data, dtype=np.uint8)
    ends = np.flatnonzero(buf == 10)
    if len(ends) == 0 or ends[-1] != len(buf) - 1:
        ends = np.append(ends, len(buf))
    starts = np.minimum(np.concatenate(([0], ends[:-1] + 1)), len(buf) - 1)
    blank = [32, 13] if sep == "\t" else [32, 13, 9]
    solid = (ends > starts) & ~np.isin(buf[starts], blank)
    if not solid.all():  # empty lines, or lines starting with a blank: count their non-blank bytes
        counts = np.add.reduceat(~np.isin(buf, [*blank, 10]), starts, dtype=np.int32)
        solid = (ends > starts) & (counts > 0)
    lines = np.flatnonzero(solid) + 1
    if len(lines) == n_rows + 1:
        return lines[1:]
    return np.arange(2, n_rows + 2)  # quoted cells span lines: rows no longer map 1:1 to lines


def _read_csv(path: Path, sep: str, q: checks.Quarantine) -> tuple[pd.DataFrame, checks.RowGuard]:
    """Every cell as str. pyarrow reads fast with every column typed string (pandas' pyarrow engine infers
    types first and turns '007' into '7'); on any trouble pandas' C engine names the bad line or byte, and
    rows with another number of fields are read by Python's csv (`_read_ragged`)."""
    data = path.read_bytes()
    try:
        end = data.find(b"\n")
        header = data[: end if end >= 0 else None].decode("utf-8-sig").rstrip("\r")
        types = {name: pa.string() for name in next(csv.reader([header], delimiter=sep))}
        parse, convert = pv.ParseOptions(delimiter=sep), pv.ConvertOptions(column_types=types)
        table = pv.read_csv(pa.BufferReader(data), parse_options=parse, convert_options=convert)
        if all(pa.types.is_string(t) for t in table.schema.types):
            return table.to_pandas(), q.guard(path, _line_numbers(data, table.num_rows, sep))
    except (UnicodeDecodeError, csv.Error, StopIteration, pa.ArrowInvalid):
        pass
    try:
        frame = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, engine="c")
    except UnicodeDecodeError as exc:
        raise checks.decode_error(path, exc, "UTF-8", fix=_FIX_FILE) from exc
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        if re.search(r"Expected \d+ fields in line \d+, saw \d+", str(exc)):
            return _read_ragged(path, data, sep, q)
        found = re.search(r"line (\d+)", str(exc))
        what = str(exc).strip().replace("Error tokenizing data. C error: ", "")
        raise DataError.at(f"cannot parse: {what}", path, line=int(found[1]) if found else None, fix=_FIX_FILE) from exc
    return frame, q.guard(path, _line_numbers(data, len(frame), sep))


def _read_ragged(path: Path, data: bytes, sep: str, q: checks.Quarantine) -> tuple[pd.DataFrame, checks.RowGuard]:
    """A CSV whose rows do not all have the header's number of fields: a row ending in empty fields (a trailing
    separator) is read without them; any other is a bad row (stops the read, or is quarantined)."""
    rows, lines = checks.csv_rows(data.decode("utf-8-sig"), sep)
    header = rows[0]
    n = len(header)
    rows = checks.fit_fields(rows[1:], n)
    guard = q.guard(path, np.array(lines[1:], dtype=np.int64))
    counts = np.array([len(row) for row in rows], dtype=np.int64)
    for found in np.unique(counts[counts != n]):
        if guard.strict:
            line = int(guard.lines[np.flatnonzero(counts == found)[0]])
            raise DataError.at(f"cannot parse: Expected {n} fields in line {line}, saw {found}", path, line=line, fix=_FIX_FILE)
        guard.reject(counts == found, f"expected {n} fields, found {found}")
    kept = [row for row, keep in zip(rows, guard.keep) if keep]
    guard.apply()
    return pd.DataFrame(kept, columns=header, dtype=object), guard


def _read(path: Path, q: checks.Quarantine) -> tuple[pd.DataFrame, checks.RowGuard]:
    """The file as a frame (CSV cells as str) and the guard of its rows (their line numbers)."""
    ext = path.suffix.lower()
    if ext not in EXTENSIONS:
        what = f"unsupported file type {ext or '(no extension)'!r}; supported: {', '.join(EXTENSIONS)}"
        raise DataError.at(what, path, fix=_FIX_FILE)
    checks.require_not_empty(path)
    if ext == ".parquet":
        try:
            frame = pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises several types for a damaged file
            raise DataError.at(f"not a readable Parquet file ({exc})", path, fix=_FIX_FILE) from exc
        guard = q.guard(path, np.arange(1, len(frame) + 1))
    else:
        frame, guard = _read_csv(path, "\t" if ext == ".tsv" else ",", q)
    frame.columns = [str(c).strip() for c in frame.columns]
    if frame.empty:
        raise DataError.at("file has a header but no rows", path, fix="export the full file again")
    return frame, guard


def _mapped(
    frame: pd.DataFrame, path: Path, mapping: dict[str, str | None], keys: dict[str, bool], section: str
) -> dict[str, str]:
    """Canonical key -> source column, checked against the allowed keys and the file's header."""
    key = f"data.tables.{section}"
    unknown = sorted(set(mapping) - set(keys))
    if unknown:
        allowed = ", ".join(keys)
        what = f"unknown key(s) {', '.join(unknown)} in {key}"
        raise DataError(what, where=f"params.yaml: {key}", fix=f"allowed keys: {allowed}")
    out = {}
    for name, required in keys.items():
        source = mapping.get(name)
        if source is None:
            if required:
                raise DataError(
                    f"no column mapped to {name!r}; it is required",
                    where=f"params.yaml: {key}.{name}",
                    fix=f"set {key}.{name} to a column of {path.name}",
                )
            continue
        if source not in frame.columns:
            raise DataError.at(
                f"column {source!r} ({key}.{name}) is not in the file; "
                f"its columns are {', '.join(map(repr, frame.columns))}",
                path,
                fix=f"set {key}.{name} in params.yaml to one of those columns" + ("" if required else " (or null)"),
            )
        out[name] = source
    return out


def _text(values: pd.Series) -> pd.Series:
    """Stripped text (ids from Parquet may be numbers); missing cells stay missing."""
    if values.dtype != object:
        values = values.astype("string").astype(object)
    return values.str.strip()


def _not_blank(values: pd.Series, guard: checks.RowGuard, column: str) -> None:
    """The guard's not_blank, called only when a (stripped) cell is empty or missing: it is the slow part."""
    if (values.isna() | (values == "")).any():
        guard.not_blank(values, column)


def _timestamps(values: pd.Series, unit: str, guard: checks.RowGuard, column: str) -> pd.Series:
    """Parse epoch numbers or ISO-8601 text to UTC (naive text is UTC, offsets are converted); bad rows are NaT."""
    if pd.api.types.is_datetime64_any_dtype(values):
        stamps = values.dt.tz_localize("UTC") if values.dt.tz is None else values.dt.tz_convert("UTC")
    else:
        numeric = unit != "iso" and values.dtype.kind in "iuf"
        text = None if numeric else _text(values)
        sample = None if numeric else pd.to_numeric(text.iloc[:1000], errors="coerce")  # auto: numbers or text?
        epoch = unit in ("s", "ms") or (unit == "auto" and (numeric or sample.notna().mean() >= 0.5))
        if epoch:
            numbers = values.astype("float64") if numeric else pd.to_numeric(text, errors="coerce")
            guard.reject(numbers.isna(), "timestamp is not an epoch number", column, _FIX_TIME, values)
            as_ms = numbers > MS_THRESHOLD if unit == "auto" else np.full(len(numbers), unit == "ms")
            millis = numbers.where(as_ms, numbers * 1000)
            guard.reject(millis.abs() > 9e12, "timestamp is out of range", column, _FIX_TIME, values)
            millis = millis.where(guard.keep, 0)
            stamps = pd.to_datetime(np.round(millis.to_numpy()).astype("int64"), unit="ms", utc=True)
            stamps = pd.Series(stamps, index=values.index).where(guard.keep)
        else:  # pandas applies one offset to naive text parsed in the same call: parse the two kinds apart
            offset = pc.match_substring_regex(pa.array(text, type=pa.string(), from_pandas=True), _OFFSET)
            offset = offset.fill_null(False).to_numpy(zero_copy_only=False)
            stamps = pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns, UTC]")
            for part in (offset, ~offset):
                if part.any():
                    stamps[part] = pd.to_datetime(text[part], utc=True, format="ISO8601", errors="coerce")
            guard.reject(stamps.isna(), "timestamp is not an ISO-8601 date", column, _FIX_TIME, text)
    stamps = stamps.astype("datetime64[ns, UTC]")
    guard.time_range(stamps, column)
    return stamps


def _read_items(path: Path, mapping: dict[str, str | None], q: checks.Quarantine) -> pd.DataFrame:
    frame, guard = _read(path, q)
    cols = _mapped(frame, path, mapping, ITEM_KEYS, "item_columns")
    items = pd.DataFrame({k: _text(frame[cols[k]]).fillna("") if k in cols else "" for k in ITEM_COLUMNS})
    _not_blank(items["item_id"], guard, cols["item_id"])
    guard.unique(items["item_id"], cols["item_id"])
    _not_blank(items["title"], guard, cols["title"])
    (items,) = guard.apply(items)
    return items


def _check_constant(events: pd.DataFrame, column: str, guard: checks.RowGuard, source: str) -> None:
    """Every row of one impression must carry the same user and timestamp (a row that does not is the bad one)."""
    groups = events.groupby("impression_id", sort=False)
    first = groups[column].transform("first")
    bad = (events[column] != first).to_numpy()
    if not bad.any():
        return
    j = int(np.flatnonzero(bad)[0])
    same = np.flatnonzero((events["impression_id"] == events["impression_id"].iat[j]).to_numpy())
    first_line = int(guard.lines[same[0]])
    fix = "all rows of one impression share its user and timestamp: fix the impression_id column"
    if guard.strict:
        raise DataError.at(
            f"impression {events['impression_id'].iat[j]!r} has {column} '{events[column].iat[j]}' here "
            f"but '{first.iat[j]}' on line {first_line}; {int(bad.sum()):,} row(s) like it",
            guard.path,
            line=int(guard.lines[j]),
            column=source,
            fix=fix,
        )
    guard.reject(bad, f"{column} differs from the impression's first row", source, fix, events[column].astype(str))


def read_tables(
    folder: str | Path,
    cfg: TablesParams,
    *,
    min_rating: float = 0.0,
    prefix: str = "",
    known_items: pd.Series | None = None,
    quarantine: checks.Quarantine | None = None,
) -> Dataset:
    """Read the configured items and interactions files in `folder` into canonical tables.

    `prefix` is prepended to impression ids so batches never collide. With a `rating` column mapped,
    rows rated below `min_rating` are dropped. Interactions may refer to this folder's items or to
    `known_items` (e.g. the items of earlier batches). Bad rows stop the read at the first one, or, with a
    `quarantine` of policy "quarantine", are recorded there and left out.
    """
    folder = Path(folder)
    checks.require_files(folder, [cfg.items, cfg.interactions], "tables")
    q = quarantine or checks.Quarantine()
    items = _read_items(folder / cfg.items, cfg.item_columns, q)
    path = folder / cfg.interactions
    frame, guard = _read(path, q)
    cols = _mapped(frame, path, cfg.interaction_columns, INTERACTION_KEYS, "interaction_columns")
    events = pd.DataFrame({"user_id": _text(frame[cols["user_id"]]), "item_id": _text(frame[cols["item_id"]])})
    for key in ("user_id", "item_id"):
        _not_blank(events[key], guard, cols[key])
    events["timestamp"] = _timestamps(frame[cols["timestamp"]], cfg.timestamp_unit, guard, cols["timestamp"])
    known = items["item_id"] if known_items is None else pd.concat([known_items, items["item_id"]])
    guard.known(events["item_id"], known, cols["item_id"], cfg.items)
    if "label" in cols:
        raw = _text(frame[cols["label"]]).str.lower()
        events["label"] = raw.map(LABELS)
        what = "label must be 0 or 1 (true/false also accepted)"
        guard.reject(events["label"].isna(), what, cols["label"], values=raw)
    if "impression_id" in cols:
        events["impression_id"] = _text(frame[cols["impression_id"]])
    if "rating" in cols:
        events["rating"] = guard.number(_text(frame[cols["rating"]]), cols["rating"])
    (events,) = guard.apply(events)
    negatives = "label" in cols and bool((events["label"] == 0).any())
    if negatives and "impression_id" not in cols:
        checks.fail_first(
            (events["label"] == 0).to_numpy(),
            "label 0 (logged non-click) without an impression_id column to group the candidates shown together",
            path,
            guard.lines,
            cols["label"],
            fix="map data.tables.interaction_columns.impression_id to the column grouping one page view or session; "
            "or keep only the label-1 rows and set data.tables.interaction_columns.label to null (positive-only log)",
        )
    if negatives:
        _not_blank(events["impression_id"], guard, cols["impression_id"])
        (events,) = guard.apply(events)
    if "rating" in cols:
        (events,) = guard.select((events["rating"] >= min_rating).to_numpy(), events)
        if events.empty:
            what = f"no interaction is rated {min_rating} or more"
            raise DataError.at(what, path, column=cols["rating"], fix="lower data.min_rating")
    if not negatives:
        dup = events.duplicated(["user_id", "item_id", "timestamp"]).to_numpy()
        what = "duplicate event (same user, item and timestamp as an earlier row)"
        guard.reject(dup, what, cols["item_id"], "drop the repeated rows", events["item_id"])
        (events,) = guard.apply(events)
        impressions, interactions = checks.implicit_impressions(events[["user_id", "item_id", "timestamp"]], prefix)
        source = SourceInfo(format="tables", explicit_history=False, logged_negatives=False)
        return Dataset(items, impressions, interactions, source)
    _check_constant(events, "user_id", guard, cols["user_id"])
    _check_constant(events, "timestamp", guard, cols["timestamp"])
    dup = events.duplicated(["impression_id", "item_id"]).to_numpy()
    fix = "each (impression_id, item_id) pair appears once"
    guard.reject(dup, "item listed twice in one impression", cols["item_id"], fix, events["item_id"])
    (events,) = guard.apply(events)
    events = events.assign(impression_id=prefix + events["impression_id"], label=events["label"].astype(np.int8))
    impressions = (
        events.drop_duplicates("impression_id")[["impression_id", "user_id", "timestamp"]]
        .assign(history="")
        .sort_values("timestamp", kind="stable")
        .reset_index(drop=True)
    )
    interactions = events[INTERACTION_COLUMNS].reset_index(drop=True)
    source = SourceInfo(format="tables", explicit_history=False, logged_negatives=True)
    return Dataset(items, impressions, interactions, source)
