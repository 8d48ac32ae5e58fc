"""Row-level checks every loader runs on its source files, failing with file, line and column.

Loaders know where each row came from; the canonical tables do not. So the checks that a user
fixes in a source file (a duplicate id, a reference to an unknown item, an empty title, a date in
the future) run here, at the source, and name the line. Great Expectations (`llmrec.validation`)
then checks the canonical contract as a whole and writes Data Docs.

A loader keeps a `line` array (source line number of each row) next to each frame it reads.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from llmrec.errors import DataError

# Ratings logs before this are not plausible (MovieLens starts in 1995); later than "now" is the future.
EARLIEST = pd.Timestamp("1990-01-01", tz="UTC")


def require_files(folder: Path, names: list[str], fmt: str) -> None:
    """Fail when one of the files a format needs is missing."""
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise DataError.at(
            f"missing file {', '.join(missing)} for the {fmt} format",
            folder,
            fix=f"a {fmt} folder holds {', '.join(names)}; restore the file or point data.path elsewhere",
        )


def require_not_empty(path: Path) -> None:
    """Fail on a file with no bytes or only blank lines (cheap: reads at most the first 64 KiB)."""
    with path.open("rb") as fh:
        head = fh.read(65536)
    if not head.strip():
        raise DataError.at("file is empty", path, fix="export the full file again")


def decode_error(path: Path, exc: UnicodeDecodeError, encoding: str, fix: str) -> DataError:
    """A DataError for bytes that are not valid in `encoding`, with the line they are on."""
    with path.open("rb") as fh:
        data = fh.read()
    offset = data.find(exc.object[exc.start : exc.end]) if isinstance(exc.object, bytes) else -1
    line = data[: offset].count(b"\n") + 1 if offset >= 0 else None
    return DataError.at(f"not valid {encoding} text ({exc.reason})", path, line=line, fix=fix)


def fail_first(mask: np.ndarray | pd.Series, what: str, path: Path, lines: np.ndarray, column: str | None, fix: str | None = None, values: pd.Series | None = None) -> None:
    """Raise for the first row where `mask` is true, counting how many rows are affected."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return
    idx = np.flatnonzero(mask)
    first = int(idx[0])
    detail = f" ({values.iat[first]!r})" if values is not None else ""
    more = f"; {len(idx) - 1:,} more row(s) like it" if len(idx) > 1 else ""
    raise DataError.at(f"{what}{detail}{more}", path, line=int(lines[first]), column=column, fix=fix)


def check_unique(values: pd.Series, path: Path, lines: np.ndarray, column: str) -> None:
    """Ids must be unique: report the second occurrence and where the first one is."""
    dup = values.duplicated(keep="first").to_numpy()
    if dup.any():
        j = int(np.flatnonzero(dup)[0])
        first = int(np.flatnonzero((values == values.iat[j]).to_numpy())[0])
        raise DataError.at(
            f"duplicate id {values.iat[j]!r} (first seen on line {int(lines[first])}); "
            f"{int(dup.sum()):,} duplicate row(s) in all",
            path,
            line=int(lines[j]),
            column=column,
            fix="ids must be unique: drop or merge the repeated rows",
        )


def check_known(values: pd.Series, known: pd.Series | pd.Index, path: Path, lines: np.ndarray, column: str, target: str) -> None:
    """Every value must exist in `known` (e.g. every rated item in the items file)."""
    fail_first(
        ~values.isin(known).to_numpy(),
        f"refers to an id that is not in {target}",
        path,
        lines,
        column,
        fix=f"add the missing rows to {target} or drop the rows that refer to them",
        values=values,
    )


def check_not_blank(values: pd.Series, path: Path, lines: np.ndarray, column: str) -> None:
    """Required text (ids, titles) must not be missing or blank."""
    blank = values.isna().to_numpy() | (values.astype("string").str.strip() == "").fillna(True).to_numpy()
    fail_first(blank, f"empty {column}", path, lines, column, fix=f"every row needs a {column}")


def check_time_range(stamps: pd.Series, path: Path, lines: np.ndarray, column: str, now: pd.Timestamp | None = None) -> None:
    """Timestamps must be parseable and lie between 1990 and now (the future cannot be logged yet)."""
    now = now or pd.Timestamp.now(tz="UTC")
    fail_first(stamps.isna().to_numpy(), "timestamp is missing or not a date", path, lines, column)
    fail_first(
        (stamps > now).to_numpy(),
        f"timestamp is in the future (after {now:%Y-%m-%d %H:%M} UTC)",
        path,
        lines,
        column,
        fix="check the clock or the unit of the timestamps (seconds vs milliseconds)",
        values=stamps,
    )
    fail_first(
        (stamps < EARLIEST).to_numpy(),
        f"timestamp is before {EARLIEST:%Y}",
        path,
        lines,
        column,
        fix="check the unit of the timestamps (seconds vs milliseconds)",
        values=stamps,
    )


def to_number(values: pd.Series, path: Path, lines: np.ndarray, column: str) -> pd.Series:
    """Parse a numeric column; a non-numeric cell fails with its line."""
    numbers = pd.to_numeric(values, errors="coerce")
    fail_first(numbers.isna().to_numpy(), "is not a number", path, lines, column, values=values)
    return numbers


def implicit_impressions(events: pd.DataFrame, prefix: str = "") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Canonical (impressions, interactions) for a positive-only log: one impression per event.

    `events` has user_id, item_id, timestamp (UTC). Impression ids are `<prefix><user>#<k>` with k
    the user's event number in time order; events of the same user and second keep the order of
    `events` (the file's order), as the published preprocessing of MovieLens for sequential models does.
    History is left empty: it is derived from the user's earlier events when needed (`llmrec.data.context`).
    """
    events = events.sort_values(["user_id", "timestamp"], kind="stable").reset_index(drop=True)
    k = events.groupby("user_id", sort=False).cumcount()
    impression_id = prefix + events["user_id"].astype(str) + "#" + k.astype(str)
    impressions = pd.DataFrame(
        {
            "impression_id": impression_id,
            "user_id": events["user_id"].astype(str),
            "timestamp": events["timestamp"],
            "history": "",
        }
    ).sort_values("timestamp", kind="stable").reset_index(drop=True)
    interactions = pd.DataFrame(
        {
            "impression_id": impression_id,
            "user_id": events["user_id"].astype(str),
            "item_id": events["item_id"].astype(str),
            "timestamp": events["timestamp"],
            "label": np.ones(len(events), dtype=np.int8),
        }
    )
    return impressions, interactions
