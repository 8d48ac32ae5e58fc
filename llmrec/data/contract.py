"""The canonical tables every source is turned into (see design.md, "Data contract").

items         item_id (str, unique), title (str, non-empty), text (str, may be ""),
              category (str), subcategory (str)
impressions   impression_id (str, unique), user_id (str), timestamp (UTC, tz-aware),
              history (str: space-separated item ids the user clicked *before* timestamp)
interactions  impression_id (str), user_id (str), item_id (str), timestamp (UTC),
              label (int8: 1 = click/consumption, 0 = shown, not clicked; -1 = unknown,
              e.g. the unlabeled MIND test split)

Every interaction belongs to one impression; an impression's candidates are its interactions.

Two properties of the source travel with the tables (`dataset.json`):

explicit_history  the source gives each impression's full history (MIND). Otherwise `history` is
                  "" and a user's history at time t is derived from their label-1 interactions
                  before t (`llmrec.data.history`), so a 25M-event log never stores O(n^2) lists.
logged_negatives  non-clicks were logged (label 0 rows). Otherwise (MovieLens, purchase logs)
                  every event is its own one-candidate impression and negatives are sampled,
                  reproducibly and only from items already seen before the impression.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

ITEM_COLUMNS = ["item_id", "title", "text", "category", "subcategory"]
OPTIONAL_ITEM_COLUMNS = ["title_entities", "abstract_entities"]  # MIND with data.keep_entities
IMPRESSION_COLUMNS = ["impression_id", "user_id", "timestamp", "history"]
INTERACTION_COLUMNS = ["impression_id", "user_id", "item_id", "timestamp", "label"]
UNLABELED = -1
META_FILE = "dataset.json"


@dataclass(frozen=True)
class SourceInfo:
    """What the source format says about its tables (see module docstring)."""

    format: str = "mind"
    explicit_history: bool = True
    logged_negatives: bool = True

    def to_dict(self) -> dict[str, object]:
        return {"format": self.format, "explicit_history": self.explicit_history, "logged_negatives": self.logged_negatives}


@dataclass
class Dataset:
    """Canonical tables of one dataset (or one slice of it)."""

    items: pd.DataFrame
    impressions: pd.DataFrame
    interactions: pd.DataFrame
    source: SourceInfo = field(default_factory=SourceInfo)

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.items.to_parquet(folder / "items.parquet", index=False)
        self.impressions.to_parquet(folder / "impressions.parquet", index=False)
        self.interactions.to_parquet(folder / "interactions.parquet", index=False)
        (folder / META_FILE).write_text(json.dumps(self.source.to_dict(), indent=2) + "\n")
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "Dataset":
        folder = Path(folder)
        if not (folder / "interactions.parquet").is_file():
            from llmrec.errors import DataError

            raise DataError.at("no canonical tables here", folder, fix="run `llmrec ingest` first")
        meta = folder / META_FILE
        source = SourceInfo(**json.loads(meta.read_text())) if meta.is_file() else SourceInfo()
        return cls(
            items=pd.read_parquet(folder / "items.parquet"),
            impressions=pd.read_parquet(folder / "impressions.parquet"),
            interactions=pd.read_parquet(folder / "interactions.parquet"),
            source=source,
        )

    def restrict(self, impression_ids: pd.Index | pd.Series) -> "Dataset":
        """The same dataset cut to the given impressions (items are kept whole)."""
        keep = set(impression_ids)
        imps = self.impressions[self.impressions["impression_id"].isin(keep)]
        inter = self.interactions[self.interactions["impression_id"].isin(keep)]
        return Dataset(self.items, imps.reset_index(drop=True), inter.reset_index(drop=True), self.source)

    @property
    def n_labeled(self) -> int:
        return int((self.interactions["label"] != UNLABELED).sum())


def history_list(history: str) -> list[str]:
    """Split a space-separated history into item ids ('' -> [])."""
    return history.split() if history else []


def candidate_frame(holdout: Dataset) -> pd.DataFrame:
    """One row per (impression, candidate) with the label and the user's history."""
    inter = holdout.interactions
    inter = inter[inter["label"] != UNLABELED]
    return inter[["impression_id", "user_id", "item_id", "label"]].merge(
        holdout.impressions[["impression_id", "history"]], on="impression_id", how="left"
    )
