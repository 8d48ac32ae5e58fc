"""Ingest: find the source format in a folder, read it, and write canonical tables.

A data folder is either one batch of a known format, or a folder of batch folders of the same
format (read in name order and concatenated; impression ids get the batch name as prefix).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from llmrec.config import DataParams
from llmrec.data import checks, mind, movielens, tables
from llmrec.data.contract import Dataset
from llmrec.errors import DataError

log = logging.getLogger(__name__)

EXPECTED = (
    "MIND (news.tsv + behaviors.tsv), MovieLens ml-100k (u.data + u.item), ml-1m (ratings.dat + movies.dat), "
    "ml-latest / ml-25m (ratings.csv + movies.csv), or your own tables (data.tables.items + "
    "data.tables.interactions, e.g. items.csv + interactions.csv)"
)


QUARANTINE_FILE = "quarantine.csv"  # beside the canonical tables: the rows left out (file, line, column, reason)


@dataclass
class IngestResult:
    dataset: Dataset
    format: str
    batches: list[str] = field(default_factory=list)
    quarantine: checks.Quarantine = field(default_factory=checks.Quarantine)

    def bad_rows(self) -> dict:
        """How many source rows were read and left out as bad, and the share allowed."""
        q = self.quarantine
        return {"policy": q.policy, "rows": len(q.rows), "read": q.read, "share": q.share, "max_share": q.max_share}

    def summary(self) -> str:
        d = self.dataset
        return (
            f"format {self.format}, batches {', '.join(self.batches)}: {len(d.items):,} items, "
            f"{len(d.impressions):,} impressions, {len(d.interactions):,} interactions"
        )


def detect_format(folder: Path, params: DataParams) -> str | None:
    """The format of one batch folder ('mind', 'ml-100k', 'ml-1m', 'ml-latest', 'tables') or None."""
    found = []
    if mind.is_mind_folder(folder):
        found.append("mind")
    layout = movielens.detect_layout(folder)
    if layout:
        found.append(layout)
    if tables.is_tables_folder(folder, params.tables):
        found.append("tables")
    if params.format != "auto":
        wanted = [f for f in found if f == params.format or (params.format == "movielens" and f.startswith("ml-"))]
        return wanted[0] if wanted else None
    if len(found) > 1:
        raise DataError.at(
            f"the folder holds files of several formats ({', '.join(found)})",
            folder,
            fix="keep one dataset per folder, or set data.format in params.yaml to say which one to read",
        )
    return found[0] if found else None


def find_batches(path: Path, params: DataParams | None = None) -> tuple[str, list[Path]]:
    """The format and the batch folders under `path`."""
    params = params or DataParams()
    if not path.exists():
        raise DataError.at("data path does not exist", path, fix="check data.path in params.yaml or the PATH argument")
    if not path.is_dir():
        raise DataError.at("data path is a file, not a folder", path, fix="pass the folder that holds the dataset's files")
    fmt = detect_format(path, params)
    if fmt:
        return fmt, [path]
    subfolders = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    formats = {p: detect_format(p, params) for p in subfolders}
    batches = [p for p, f in formats.items() if f]
    kinds = sorted({f for f in formats.values() if f})
    if len(kinds) > 1:
        listing = ", ".join(f"{p.name}: {f}" for p, f in formats.items() if f)
        raise DataError.at(
            f"batch folders of different formats ({listing})",
            path,
            fix="every batch folder of one dataset must have the same format",
        )
    if batches:
        return kinds[0], batches
    _raise_if_partial(path, params)
    found = sorted(p.name for p in path.iterdir())[:12]
    wanted = EXPECTED if params.format == "auto" else f"the {params.format} format (data.format)"
    raise DataError.at(
        f"no known dataset format found (contents: {', '.join(found) or 'empty folder'})",
        path,
        fix=f"expected a folder (or a folder of batch folders) holding {wanted}",
    )


def _raise_if_partial(folder: Path, params: DataParams) -> None:
    """A folder holding some but not all files of a format: name the missing ones."""
    layouts = {"mind": list(mind.MIND_FILES), **movielens.LAYOUTS, "tables": [params.tables.items, params.tables.interactions]}
    for fmt, names in layouts.items():
        present = [n for n in names if (folder / n).is_file()]
        if present and len(present) < len(names):
            missing = [n for n in names if n not in present]
            raise DataError.at(
                f"missing file {', '.join(missing)}: the folder looks like {fmt} data ({', '.join(present)} found)",
                folder,
                fix=f"a {fmt} folder holds {' + '.join(names)}; restore the missing file",
            )


def _read_batch(
    fmt: str, folder: Path, params: DataParams, prefix: str, known_items: pd.Series | None, q: checks.Quarantine
) -> Dataset:
    if fmt == "mind":
        return mind.read_mind(folder, prefix=prefix, keep_entities=params.keep_entities, known_items=known_items, quarantine=q)
    if fmt.startswith("ml-"):
        return movielens.read_movielens(folder, min_rating=params.min_rating, prefix=prefix, quarantine=q)
    return tables.read_tables(folder, params.tables, min_rating=params.min_rating, prefix=prefix, known_items=known_items, quarantine=q)


def load_source(path: str | Path, params: DataParams | None = None) -> IngestResult:
    """Read every batch under `path` and concatenate them into one canonical dataset.

    Bad rows follow data.bad_rows: the first stops the read (error), or each is left out and kept in the
    result's quarantine, failing the read when more than data.max_bad_row_share of the rows read are bad.
    """
    params = params or DataParams()
    path = Path(path)
    fmt, batches = find_batches(path, params)
    log.info("found %s data in %s (%d batch(es))", fmt, path, len(batches))
    q = checks.Quarantine(policy=params.bad_rows, max_share=params.max_bad_row_share)
    parts: list[Dataset] = []
    for batch in batches:
        known = pd.concat([p.items["item_id"] for p in parts]) if parts else None
        parts.append(_read_batch(fmt, batch, params, f"{batch.name}:", known, q))
    q.check_share()
    if q.rows:
        log.warning("left out %d bad row(s) of %d read (%.3f%%, data.max_bad_row_share %.3f%%); the first: %s line %d: %s",
                    len(q.rows), q.read, 100 * q.share, 100 * q.max_share, q.rows[0].file, q.rows[0].line, q.rows[0].reason)
    if len(parts) == 1:
        dataset = parts[0]
        dataset.impressions = dataset.impressions.sort_values("timestamp", kind="stable").reset_index(drop=True)
    else:
        items = pd.concat([p.items for p in parts]).drop_duplicates("item_id", keep="last")
        dataset = Dataset(
            items=items.sort_values("item_id").reset_index(drop=True),
            impressions=pd.concat([p.impressions for p in parts]).sort_values("timestamp", kind="stable").reset_index(drop=True),
            interactions=pd.concat([p.interactions for p in parts]).reset_index(drop=True),
            source=parts[0].source,
        )
    result = IngestResult(dataset=dataset, format=fmt, batches=[b.name for b in batches], quarantine=q)
    log.info("ingested %s", result.summary())
    return result


def source_fingerprint(path: str | Path) -> dict[str, list]:
    """Each file under `path` (relative name) -> [size, mtime_ns, sha256]: what `source_changes` compares."""
    return {name: [file.stat().st_size, file.stat().st_mtime_ns, _sha256(file)] for name, file in _files(Path(path)).items()}


def _files(root: Path) -> dict[str, Path]:
    if root.is_file():
        return {root.name: root}
    return {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*")) if p.is_file()}


def _sha256(file: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with file.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def source_changes(path: str | Path, recorded: dict[str, list]) -> list[str]:
    """Files under `path` added, removed or changed since `recorded` (a `source_fingerprint`).

    Sizes and modification times decide when they settle it; a file only touched (same size, new time,
    e.g. restored by `dvc checkout`) is hashed, so same bytes are no change.
    """
    root = Path(path)
    if not root.exists():
        return sorted(recorded) or [str(root)]
    files = _files(root)
    changed = sorted(set(files) ^ set(recorded))
    for name in sorted(set(files) & set(recorded)):
        size, mtime, sha = recorded[name]
        stat = files[name].stat()
        if stat.st_size != size or (stat.st_mtime_ns != mtime and _sha256(files[name]) != sha):
            changed.append(name)
    return changed


def ingest(path: str | Path, out: str | Path, params: DataParams | None = None) -> IngestResult:
    """Read the source at `path` and write canonical Parquet tables to `out` (and the rows left out as bad
    to `out`/quarantine.csv)."""
    result = load_source(path, params)
    result.dataset.save(out)
    quarantined = Path(out) / QUARANTINE_FILE
    if result.quarantine.rows:
        pd.DataFrame(result.quarantine.records(), columns=["file", "line", "column", "reason"]).to_csv(quarantined, index=False)
    else:
        quarantined.unlink(missing_ok=True)
    return result
