"""Ingest: find the source format in a folder, read it, and write canonical tables."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from llmrec.data import mind
from llmrec.data.contract import Dataset
from llmrec.errors import DataError

log = logging.getLogger(__name__)


@dataclass
class IngestResult:
    dataset: Dataset
    format: str
    batches: list[str] = field(default_factory=list)

    def summary(self) -> str:
        d = self.dataset
        return (
            f"format {self.format}, batches {', '.join(self.batches)}: {len(d.items):,} items, "
            f"{len(d.impressions):,} impressions, {len(d.interactions):,} interactions"
        )


def find_batches(path: Path) -> list[Path]:
    """A MIND folder is one batch; a folder of MIND folders is several batches, in name order."""
    if not path.exists():
        raise DataError.at("data path does not exist", path, fix="check data.path in params.yaml or the PATH argument")
    if mind.is_mind_folder(path):
        return [path]
    batches = sorted(p for p in path.iterdir() if p.is_dir() and mind.is_mind_folder(p))
    if batches:
        return batches
    found = sorted(p.name for p in path.iterdir())[:10]
    raise DataError.at(
        f"no known dataset format found (contents: {found or 'empty'})",
        path,
        fix="expected a MIND folder (news.tsv + behaviors.tsv) or a folder of such folders, one per batch",
    )


def load_source(path: str | Path) -> IngestResult:
    """Read every batch under `path` and concatenate them into one canonical dataset."""
    path = Path(path)
    batches = find_batches(path)
    parts = [mind.read_mind(b, prefix=f"{b.name}:") for b in batches]
    items = pd.concat([p.items for p in parts]).drop_duplicates("item_id", keep="last")
    dataset = Dataset(
        items=items.sort_values("item_id").reset_index(drop=True),
        impressions=pd.concat([p.impressions for p in parts]).sort_values("timestamp", kind="stable").reset_index(drop=True),
        interactions=pd.concat([p.interactions for p in parts]).reset_index(drop=True),
    )
    result = IngestResult(dataset=dataset, format="mind", batches=[b.name for b in batches])
    log.info("ingested %s", result.summary())
    return result


def ingest(path: str | Path, out: str | Path) -> IngestResult:
    """Read the source at `path` and write canonical Parquet tables to `out`."""
    result = load_source(path)
    result.dataset.save(out)
    return result
