"""MIND loader: `news.tsv` + `behaviors.tsv` (Microsoft News Dataset format) -> canonical tables.

news.tsv       id, category, subcategory, title, abstract, url, title_entities, abstract_entities
behaviors.tsv  impression id, user id, time ("11/15/2019 8:55:22 AM"), history ("N1 N2"),
               impressions ("N3-1 N4-0"; the test split has no "-label" suffix)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from llmrec.data import checks
from llmrec.data.contract import UNLABELED, Dataset, SourceInfo
from llmrec.errors import DataError

NEWS_COLUMNS = ["item_id", "category", "subcategory", "title", "abstract", "url", "title_entities", "abstract_entities"]
ENTITY_COLUMNS = ["title_entities", "abstract_entities"]
MIND_TIME_FORMAT = "%m/%d/%Y %I:%M:%S %p"
MIND_FILES = ("news.tsv", "behaviors.tsv")
_FIX_FORMAT = "MIND files are UTF-8, tab-separated, without a header; see docs/your-data.md"


def is_mind_folder(folder: Path) -> bool:
    return all((folder / name).is_file() for name in MIND_FILES)


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError.at(
            f"missing file {path.name}",
            path.parent,
            fix=f"a MIND folder holds {' and '.join(MIND_FILES)}",
        )
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError.at(f"not valid UTF-8 (byte {exc.start})", path, line=line, fix=_FIX_FORMAT) from exc
    # split on newlines only: str.splitlines() would also split on form feeds, U+2028 etc. in titles
    lines = [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]
    if lines and lines[-1] == "":
        lines.pop()
    if not any(line.strip() for line in lines):
        raise DataError.at("file is empty", path, fix="export the full file again")
    return lines


def _split_rows(path: Path, lines: list[str], n_columns: int, names: str, q: checks.Quarantine) -> tuple[list[list[str]], checks.RowGuard]:
    """The tab-separated fields of each non-blank line (a line ending in empty fields, e.g. a trailing tab, is
    read without them), and the guard of those rows: a line with another number of fields is a bad row."""
    rows, numbers = [], []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) > n_columns and not "".join(parts[n_columns:]).strip():
            parts = parts[:n_columns]
        rows.append(parts)
        numbers.append(lineno)
    guard = q.guard(path, np.array(numbers, dtype=np.int64))
    counts = np.array([len(parts) for parts in rows], dtype=np.int64)
    if len(counts) > 1 and counts[0] != n_columns and (counts == counts[0]).all():  # the file, not a few rows
        what = "a missing column? every line has" if counts[0] < n_columns else "every line has"
        raise DataError.at(f"{what} {counts[0]} tab-separated columns, expected {n_columns} ({names})", path,
                           line=int(guard.lines[0]), fix=_FIX_FORMAT)
    for found in np.unique(counts[counts != n_columns]):
        guard.reject(counts == found, f"expected {n_columns} tab-separated columns ({names}), found {found}", fix=_FIX_FORMAT)
    rows = [parts for parts, keep in zip(rows, guard.keep) if keep]
    guard.apply()
    return rows, guard


def read_news(path: str | Path, keep_entities: bool = False, quarantine: checks.Quarantine | None = None) -> pd.DataFrame:
    """Read news.tsv into the canonical items table (plus the entity JSON columns if asked)."""
    path = Path(path)
    lines = _read_lines(path)
    rows, guard = _split_rows(path, lines, 8, "id, category, subcategory, title, abstract, url, entities x2",
                              quarantine or checks.Quarantine())
    news = pd.DataFrame(rows, columns=NEWS_COLUMNS)
    items = pd.DataFrame(
        {
            "item_id": news["item_id"].str.strip(),
            "title": news["title"].str.strip(),
            "text": news["abstract"].str.strip(),
            "category": news["category"].str.strip(),
            "subcategory": news["subcategory"].str.strip(),
        }
    )
    guard.not_blank(items["item_id"], "id")
    guard.unique(items["item_id"], "id")
    guard.not_blank(items["title"], "title")
    if keep_entities:
        for column in ENTITY_COLUMNS:
            items[column] = news[column].str.strip()
    (items,) = guard.apply(items)
    return items


def read_behaviors(
    path: str | Path, prefix: str = "", known_items: pd.Series | None = None, quarantine: checks.Quarantine | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read behaviors.tsv into canonical (impressions, interactions) tables.

    `prefix` is prepended to impression ids so batches from several files never collide.
    With `known_items`, every history entry and candidate must be one of them (else the line is named).
    A bad line stops the read, or, with a `quarantine` of policy "quarantine", is recorded there and left out.
    """
    path = Path(path)
    lines = _read_lines(path)
    rows, guard = _split_rows(path, lines, 5, "impression id, user, time, history, impressions", quarantine or checks.Quarantine())
    frame = pd.DataFrame(rows, columns=["impression_id", "user_id", "time", "history", "candidates"])
    stamps = pd.to_datetime(frame["time"], format=MIND_TIME_FORMAT, errors="coerce")
    guard.reject(stamps.isna(), "time is not in MIND's format like '11/15/2019 8:55:22 AM'", "time", values=frame["time"])
    stamps = stamps.dt.tz_localize("UTC")
    guard.time_range(stamps.where(guard.keep, pd.Timestamp("2000-01-01", tz="UTC")), "time")
    for column in ("impression_id", "user_id"):
        guard.reject(frame[column].str.strip() == "", f"empty {column}", column)
    guard.unique(frame["impression_id"].str.strip(), "impression id")
    frame, stamps = guard.apply(frame, stamps)
    _check_candidates(guard, frame["candidates"])
    if known_items is not None:
        _check_references(guard, frame, known_items)
    frame, stamps = guard.apply(frame, stamps)
    impressions = pd.DataFrame(
        {
            "impression_id": prefix + frame["impression_id"].str.strip(),
            "user_id": frame["user_id"].str.strip(),
            "timestamp": stamps,
            "history": frame["history"].str.split().str.join(" "),
        }
    )
    return impressions, _explode_candidates(frame["candidates"], impressions)


def _tokens(candidates: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """Every candidate token ('N1-1' or 'N1') and the row it belongs to."""
    tokens = candidates.str.split()
    counts = tokens.str.len().to_numpy()
    flat = pd.Series(np.concatenate(tokens.to_numpy()) if len(tokens) else [], dtype=object)
    return flat, np.repeat(np.arange(len(tokens)), counts)


def _check_candidates(guard: checks.RowGuard, candidates: pd.Series) -> None:
    """Each impression lists candidates, all labelled ('N1-1') or all not (the test split), labels 0 or 1."""
    counts = candidates.str.split().str.len().to_numpy()
    guard.reject(counts == 0, "impression has no candidates", "impressions")
    flat, row = _tokens(candidates)
    flat, row = flat[guard.keep[row]].reset_index(drop=True), row[guard.keep[row]]
    labelled = flat.str.contains("-", regex=False).to_numpy()
    if labelled.any() and not labelled.all():
        i = int(row[int(np.flatnonzero(~labelled)[0])])
        raise DataError.at(
            "mixes labelled ('N1-1') and unlabelled ('N1') candidates",
            guard.path,
            line=int(guard.lines[i]),
            column="impressions",
            fix="each file is either a labelled split (train/dev) or the unlabelled test split",
        )
    if labelled.all():
        label = flat.str.rsplit("-", n=1).str[1]
        bad = ~label.isin(["0", "1"]).to_numpy()
        if bad.any():
            rows = np.zeros(len(candidates), dtype=bool)
            rows[row[bad]] = True
            j = int(np.flatnonzero(bad)[0])
            guard.reject(rows, f"candidate {flat.iat[j]!r} has label {label.iat[j]!r}; labels must be 0 or 1", "impressions")


def _check_references(guard: checks.RowGuard, frame: pd.DataFrame, known: pd.Series) -> None:
    """Every history entry and candidate of a kept row must be a known item (news.tsv, earlier batches)."""
    for column, name in (("history", "history"), ("candidates", "impressions")):
        flat, row = _tokens(frame[column])
        flat, row = flat[guard.keep[row]].reset_index(drop=True), row[guard.keep[row]]
        if column == "candidates":
            flat = flat.str.rsplit("-", n=1).str[0] if flat.str.contains("-", regex=False).all() else flat
        unknown = ~flat.isin(known).to_numpy()
        if unknown.any():
            rows = np.zeros(len(frame), dtype=bool)
            rows[row[unknown]] = True
            first = pd.Series(flat.to_numpy()[unknown][np.unique(row[unknown], return_index=True)[1]])
            values = pd.Series("", index=range(len(frame)), dtype=object)
            values.iloc[np.unique(row[unknown])] = first.to_numpy()
            guard.reject(rows, "refers to an id that is not in news.tsv", name,
                         fix="add the missing rows to news.tsv or drop the rows that refer to them", values=values)


def _explode_candidates(candidates: pd.Series, impressions: pd.DataFrame) -> pd.DataFrame:
    """One interaction per candidate of each (checked) impression."""
    flat, row = _tokens(candidates)
    labelled = bool(len(flat)) and flat.str.contains("-", regex=False).all()
    if labelled:
        parts = flat.str.rsplit("-", n=1, expand=True)
        item_ids, labels = parts[0], parts[1].astype(np.int8).to_numpy()
    else:
        item_ids, labels = flat, np.full(len(flat), UNLABELED, dtype=np.int8)
    return pd.DataFrame(
        {
            "impression_id": impressions["impression_id"].to_numpy()[row],
            "user_id": impressions["user_id"].to_numpy()[row],
            "item_id": item_ids.to_numpy(),
            "timestamp": impressions["timestamp"].to_numpy()[row],
            "label": labels,
        }
    ).assign(timestamp=lambda d: pd.to_datetime(d["timestamp"], utc=True))


def read_mind(
    folder: str | Path, prefix: str = "", keep_entities: bool = False, known_items: pd.Series | None = None,
    quarantine: checks.Quarantine | None = None,
) -> Dataset:
    """Read one MIND folder (train, dev or test split) into canonical tables.

    References are checked against this folder's news plus `known_items` (e.g. earlier batches). Bad rows
    stop the read, or, with a `quarantine` of policy "quarantine", are recorded there and left out.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError.at("not a folder", folder, fix="pass the folder that holds news.tsv and behaviors.tsv")
    checks.require_files(folder, list(MIND_FILES), "MIND")
    items = read_news(folder / "news.tsv", keep_entities=keep_entities, quarantine=quarantine)
    known = items["item_id"] if known_items is None else pd.concat([known_items, items["item_id"]])
    impressions, interactions = read_behaviors(folder / "behaviors.tsv", prefix=prefix, known_items=known, quarantine=quarantine)
    return Dataset(items=items, impressions=impressions, interactions=interactions, source=SourceInfo(format="mind"))
