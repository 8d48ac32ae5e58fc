"""Row-level checks every loader runs on its source files, failing with file, line and column.

Loaders know where each row came from; the canonical tables do not. So the checks that a user
fixes in a source file (a duplicate id, a reference to an unknown item, an empty title, a date in
the future) run here, at the source, and name the line. Great Expectations (`llmrec.validation`)
then checks the canonical contract as a whole and writes Data Docs.

A loader keeps a `line` array (source line number of each row) next to each frame it reads.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from llmrec.errors import DataError

# Ratings logs before this are not plausible (MovieLens starts in 1995); later than "now" is the future.
EARLIEST = pd.Timestamp("1990-01-01", tz="UTC")


@dataclass(frozen=True)
class BadRow:
    """One source row a loader rejected: where it is and why."""

    file: str
    line: int
    column: str | None
    reason: str
    fix: str | None = None


@dataclass
class Quarantine:
    """The bad-row policy of one ingest (`data.bad_rows`, `data.max_bad_row_share`) and the rows it rejected.

    `error`: a loader stops at the first bad row (file, line, column, fix). `quarantine`: each bad row is
    kept here with its line and reason and left out of the tables; `check_share` then fails the ingest
    when more than `max_share` of the rows read were bad. Loaders get one `RowGuard` per file from it.
    """

    policy: str = "error"  # error | quarantine
    max_share: float = 0.0
    rows: list[BadRow] = field(default_factory=list)
    read: int = 0  # data rows read, over every file

    def guard(self, path: Path, lines: np.ndarray) -> "RowGuard":
        self.read += len(lines)
        return RowGuard(self, Path(path), np.asarray(lines))

    @property
    def share(self) -> float:
        return len(self.rows) / self.read if self.read else 0.0

    def check_share(self) -> None:
        """Fail when more than `max_share` of the rows read were rejected (naming the first ones)."""
        if not self.rows or self.share <= self.max_share:
            return
        first = self.rows[0]
        others = "; ".join(f"{Path(r.file).name} line {r.line}: {r.reason}" for r in self.rows[1:5])
        raise DataError.at(
            f"{first.reason}\n  ({len(self.rows):,} of {self.read:,} rows read are bad, {self.share:.2%}, more than "
            f"data.max_bad_row_share {self.max_share:.2%} allows" + (f"; next: {others}" if others else "") + ")",
            first.file,
            line=first.line,
            column=first.column,
            fix=(f"{first.fix}; " if first.fix else "") + "fix or remove the bad rows in the source files "
            "(or raise data.max_bad_row_share to leave them out)",
        )

    def records(self) -> list[dict]:
        """The rejected rows as plain dicts (file, line, column, reason), for the quarantine file."""
        return [{k: v for k, v in asdict(r).items() if k != "fix"} for r in self.rows]


class RowGuard:
    """The row checks of one file. `reject(mask, what, ...)` raises at the first bad row under policy `error`
    (as `fail_first`), or records the rows and drops them from `keep` under `quarantine`; rows already
    dropped are not judged again. `apply(*frames)` cuts frames (and the guard's line numbers) to the kept rows."""

    def __init__(self, quarantine: Quarantine, path: Path, lines: np.ndarray) -> None:
        self.quarantine = quarantine
        self.path = path
        self.lines = lines
        self.keep = np.ones(len(lines), dtype=bool)

    def reject(
        self, mask: np.ndarray | pd.Series, what: str, column: str | None = None, fix: str | None = None,
        values: pd.Series | None = None, reasons: list[str] | None = None,
    ) -> None:
        """Rows where `mask` is true are bad: `what` (with the row's value, or its own reason from `reasons`)."""
        mask = np.asarray(mask, dtype=bool) & self.keep
        if not mask.any():
            return
        if self.quarantine.policy != "quarantine":
            fail_first(mask, what, self.path, self.lines, column, fix, values)
        for k, i in enumerate(np.flatnonzero(mask)):
            reason = reasons[k] if reasons is not None else what + (f" ({values.iat[int(i)]!r})" if values is not None else "")
            self.quarantine.rows.append(BadRow(str(self.path), int(self.lines[i]), column, reason, fix))
        self.keep &= ~mask

    @property
    def strict(self) -> bool:
        return self.quarantine.policy != "quarantine"

    def unique(self, values: pd.Series, column: str) -> None:
        """Ids must be unique: the second occurrence is the bad row (the first one is kept)."""
        kept = values[self.keep] if not self.keep.all() else values
        dup = np.zeros(len(values), dtype=bool)
        dup[np.flatnonzero(self.keep)[kept.duplicated(keep="first").to_numpy()]] = True
        if not dup.any():
            return
        j = int(np.flatnonzero(dup)[0])
        first = int(np.flatnonzero((values == values.iat[j]).to_numpy() & self.keep)[0])
        if self.strict:
            raise DataError.at(
                f"duplicate id {values.iat[j]!r} (first seen on line {int(self.lines[first])}); "
                f"{int(dup.sum()):,} duplicate row(s) in all",
                self.path,
                line=int(self.lines[j]),
                column=column,
                fix="ids must be unique: drop or merge the repeated rows",
            )
        rows = np.flatnonzero(dup)
        kept = np.flatnonzero(self.keep)
        first_of = pd.Series(kept, index=values.iloc[kept].to_numpy()).groupby(level=0).first()
        firsts = first_of.loc[values.iloc[rows].to_numpy()].to_numpy()
        reasons = [f"duplicate id {values.iat[int(i)]!r} (first seen on line {int(self.lines[f])})" for i, f in zip(rows, firsts)]
        self.reject(dup, "duplicate id", column, "ids must be unique: drop or merge the repeated rows", reasons=reasons)

    def known(self, values: pd.Series, known: pd.Series | pd.Index, column: str, target: str) -> None:
        """Every value must exist in `known` (e.g. every rated item in the items file)."""
        self.reject(
            ~values.isin(known).to_numpy(),
            f"refers to an id that is not in {target}",
            column,
            fix=f"add the missing rows to {target} or drop the rows that refer to them",
            values=values,
        )

    def not_blank(self, values: pd.Series, column: str) -> None:
        """Required text (ids, titles) must not be missing or blank."""
        blank = values.isna().to_numpy() | (values.astype("string").str.strip() == "").fillna(True).to_numpy()
        self.reject(blank, f"empty {column}", column, fix=f"every row needs a {column}")

    def time_range(self, stamps: pd.Series, column: str, now: pd.Timestamp | None = None) -> None:
        """Timestamps must be parseable and lie between 1990 and now (the future cannot be logged yet)."""
        now = now or pd.Timestamp.now(tz="UTC")
        self.reject(stamps.isna().to_numpy(), "timestamp is missing or not a date", column)
        self.reject(
            (stamps > now).to_numpy(),
            f"timestamp is in the future (after {now:%Y-%m-%d %H:%M} UTC)",
            column,
            fix="check the clock or the unit of the timestamps (seconds vs milliseconds)",
            values=stamps,
        )
        self.reject(
            (stamps < EARLIEST).to_numpy(),
            f"timestamp is before {EARLIEST:%Y}",
            column,
            fix="check the unit of the timestamps (seconds vs milliseconds)",
            values=stamps,
        )

    def number(self, values: pd.Series, column: str, fix: str | None = None) -> pd.Series:
        """Parse a numeric column; a non-numeric cell is a bad row (quarantined rows read as NaN)."""
        numbers = pd.to_numeric(values, errors="coerce")
        self.reject(numbers.isna().to_numpy(), "is not a number", column, fix, values=values)
        return numbers

    def apply(self, *frames: pd.DataFrame | pd.Series) -> list:
        """The frames cut to the kept rows (index reset); the guard then follows the cut frames."""
        return self.select(self.keep, *frames)

    def select(self, rows: np.ndarray | pd.Series, *frames: pd.DataFrame | pd.Series) -> list:
        """The frames cut to `rows` (not bad rows: e.g. ratings below data.min_rating); the guard follows them."""
        rows = np.asarray(rows, dtype=bool)
        out = [f[rows].reset_index(drop=True) for f in frames]
        self.lines, self.keep = self.lines[rows], self.keep[rows]
        return out


def strict(path: Path, lines: np.ndarray) -> RowGuard:
    """A guard under policy `error` (what a loader uses when no Quarantine is given)."""
    return Quarantine().guard(path, lines)


def csv_rows(text: str, sep: str = ",") -> tuple[list[list[str]], list[int]]:
    """The rows of a CSV text (quotes honoured, Python's csv) and the line each starts on; blank rows are skipped."""
    import csv
    import io

    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep)
    rows, lines, start = [], [], 1
    for row in reader:
        if any(cell.strip() for cell in row):
            rows.append(row)
            lines.append(start)
        start = reader.line_num + 1
    return rows, lines


def fit_fields(rows: list[list[str]], n: int) -> list[list[str]]:
    """Rows with empty fields beyond the first `n` (a trailing separator) lose them; other rows are as they were."""
    return [row[:n] if len(row) > n and not "".join(row[n:]).strip() else row for row in rows]


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
    strict(path, lines).unique(values, column)


def check_known(values: pd.Series, known: pd.Series | pd.Index, path: Path, lines: np.ndarray, column: str, target: str) -> None:
    """Every value must exist in `known` (e.g. every rated item in the items file)."""
    strict(path, lines).known(values, known, column, target)


def check_not_blank(values: pd.Series, path: Path, lines: np.ndarray, column: str) -> None:
    """Required text (ids, titles) must not be missing or blank."""
    strict(path, lines).not_blank(values, column)


def check_time_range(stamps: pd.Series, path: Path, lines: np.ndarray, column: str, now: pd.Timestamp | None = None) -> None:
    """Timestamps must be parseable and lie between 1990 and now (the future cannot be logged yet)."""
    strict(path, lines).time_range(stamps, column, now)


def to_number(values: pd.Series, path: Path, lines: np.ndarray, column: str) -> pd.Series:
    """Parse a numeric column; a non-numeric cell fails with its line."""
    return strict(path, lines).number(values, column)


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
