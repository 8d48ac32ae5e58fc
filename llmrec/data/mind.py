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
_FIX_FORMAT = "MIND files are UTF-8, tab-separated, without a header; see README 'Bring your own data'"


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


def _split_rows(path: Path, lines: list[str], n_columns: int, names: str) -> list[list[str]]:
    rows = []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != n_columns:
            raise DataError.at(
                f"expected {n_columns} tab-separated columns ({names}), found {len(parts)}",
                path,
                line=lineno,
                fix=_FIX_FORMAT,
            )
        rows.append(parts)
    return rows


def read_news(path: str | Path, keep_entities: bool = False) -> pd.DataFrame:
    """Read news.tsv into the canonical items table (plus the entity JSON columns if asked)."""
    path = Path(path)
    lines = _read_lines(path)
    rows = _split_rows(path, lines, 8, "id, category, subcategory, title, abstract, url, entities x2")
    line_numbers = np.asarray(_line_numbers(lines))
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
    checks.check_not_blank(items["item_id"], path, line_numbers, "id")
    checks.check_unique(items["item_id"], path, line_numbers, "id")
    checks.check_not_blank(items["title"], path, line_numbers, "title")
    if keep_entities:
        for column in ENTITY_COLUMNS:
            items[column] = news[column].str.strip()
    return items


def read_behaviors(
    path: str | Path, prefix: str = "", known_items: pd.Series | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read behaviors.tsv into canonical (impressions, interactions) tables.

    `prefix` is prepended to impression ids so batches from several files never collide.
    With `known_items`, every history entry and candidate must be one of them (else the line is named).
    """
    path = Path(path)
    lines = _read_lines(path)
    rows = _split_rows(path, lines, 5, "impression id, user, time, history, impressions")
    line_numbers = _line_numbers(lines)
    frame = pd.DataFrame(rows, columns=["impression_id", "user_id", "time", "history", "candidates"])
    stamps = pd.to_datetime(frame["time"], format=MIND_TIME_FORMAT, errors="coerce")
    bad = stamps.isna().to_numpy().nonzero()[0]
    if len(bad):
        i = int(bad[0])
        raise DataError.at(
            f"time {frame['time'].iat[i]!r} is not in MIND's format like '11/15/2019 8:55:22 AM'",
            path,
            line=line_numbers[i],
            column="time",
        )
    stamps = stamps.dt.tz_localize("UTC")
    lines_arr = np.asarray(line_numbers)
    checks.check_time_range(stamps, path, lines_arr, "time")
    for column in ("impression_id", "user_id"):
        empty = (frame[column].str.strip() == "").to_numpy().nonzero()[0]
        if len(empty):
            raise DataError.at(f"empty {column}", path, line=line_numbers[int(empty[0])], column=column)
    checks.check_unique(frame["impression_id"].str.strip(), path, lines_arr, "impression id")
    impression_ids = prefix + frame["impression_id"].str.strip()
    impressions = pd.DataFrame(
        {
            "impression_id": impression_ids,
            "user_id": frame["user_id"].str.strip(),
            "timestamp": stamps,
            "history": frame["history"].str.split().str.join(" "),
        }
    )
    interactions = _explode_candidates(path, frame["candidates"], impressions, line_numbers)
    if known_items is not None:
        _check_references(path, impressions, interactions, known_items, lines_arr)
    return impressions, interactions


def _check_references(
    path: Path, impressions: pd.DataFrame, interactions: pd.DataFrame, known: pd.Series, lines: np.ndarray
) -> None:
    hist = impressions["history"].str.split()
    entries = hist.explode()
    row_of_entry = np.repeat(np.arange(len(hist)), hist.str.len().fillna(0).astype(int).to_numpy())
    entries = entries.dropna().reset_index(drop=True)
    checks.check_known(entries, known, path, lines[row_of_entry], "history", "news.tsv")
    row_of_candidate = pd.Index(impressions["impression_id"]).get_indexer(interactions["impression_id"])
    checks.check_known(interactions["item_id"], known, path, lines[row_of_candidate], "impressions", "news.tsv")


def _line_numbers(lines: list[str]) -> list[int]:
    return [i for i, line in enumerate(lines, 1) if line.strip()]


def _explode_candidates(
    path: Path, candidates: pd.Series, impressions: pd.DataFrame, line_numbers: list[int]
) -> pd.DataFrame:
    tokens = candidates.str.split()
    counts = tokens.str.len().to_numpy()
    if (counts == 0).any():
        i = int((counts == 0).nonzero()[0][0])
        raise DataError.at("impression has no candidates", path, line=line_numbers[i], column="impressions")
    flat = pd.Series(np.concatenate(tokens.to_numpy()), dtype=object)
    row = np.repeat(np.arange(len(tokens)), counts)
    labelled = flat.str.contains("-", regex=False)
    if labelled.any() and not labelled.all():
        i = int(row[int((~labelled).to_numpy().nonzero()[0][0])])
        raise DataError.at(
            "mixes labelled ('N1-1') and unlabelled ('N1') candidates",
            path,
            line=line_numbers[i],
            column="impressions",
            fix="each file is either a labelled split (train/dev) or the unlabelled test split",
        )
    if labelled.all():
        parts = flat.str.rsplit("-", n=1, expand=True)
        item_ids, label_text = parts[0], parts[1]
        bad = ~label_text.isin(["0", "1"])
        if bad.any():
            j = int(bad.to_numpy().nonzero()[0][0])
            raise DataError.at(
                f"candidate {flat.iat[j]!r} has label {label_text.iat[j]!r}; labels must be 0 or 1",
                path,
                line=line_numbers[int(row[j])],
                column="impressions",
            )
        labels = label_text.astype(np.int8).to_numpy()
    else:
        item_ids = flat
        labels = np.full(len(flat), UNLABELED, dtype=np.int8)
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
    folder: str | Path, prefix: str = "", keep_entities: bool = False, known_items: pd.Series | None = None
) -> Dataset:
    """Read one MIND folder (train, dev or test split) into canonical tables.

    References are checked against this folder's news plus `known_items` (e.g. earlier batches).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError.at("not a folder", folder, fix="pass the folder that holds news.tsv and behaviors.tsv")
    checks.require_files(folder, list(MIND_FILES), "MIND")
    items = read_news(folder / "news.tsv", keep_entities=keep_entities)
    known = items["item_id"] if known_items is None else pd.concat([known_items, items["item_id"]])
    impressions, interactions = read_behaviors(folder / "behaviors.tsv", prefix=prefix, known_items=known)
    return Dataset(items=items, impressions=impressions, interactions=interactions, source=SourceInfo(format="mind"))
