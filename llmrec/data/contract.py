"""The canonical tables every source is turned into (see design.md, "Data contract").

items         item_id (str, unique), title (str, non-empty), text (str, may be ""),
              category (str), subcategory (str)
impressions   impression_id (str, unique), user_id (str), timestamp (UTC, tz-aware),
              history (str: space-separated item ids the user clicked *before* timestamp)
interactions  impression_id (str), user_id (str), item_id (str), timestamp (UTC),
              label (int8: 1 = click/consumption, 0 = shown, not clicked; -1 = unknown,
              e.g. the unlabeled MIND test split)

Every interaction belongs to one impression; an impression's candidates are its interactions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

ITEM_COLUMNS = ["item_id", "title", "text", "category", "subcategory"]
IMPRESSION_COLUMNS = ["impression_id", "user_id", "timestamp", "history"]
INTERACTION_COLUMNS = ["impression_id", "user_id", "item_id", "timestamp", "label"]
UNLABELED = -1


@dataclass
class Dataset:
    """Canonical tables of one dataset (or one slice of it)."""

    items: pd.DataFrame
    impressions: pd.DataFrame
    interactions: pd.DataFrame

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.items.to_parquet(folder / "items.parquet", index=False)
        self.impressions.to_parquet(folder / "impressions.parquet", index=False)
        self.interactions.to_parquet(folder / "interactions.parquet", index=False)
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "Dataset":
        folder = Path(folder)
        if not (folder / "interactions.parquet").is_file():
            from llmrec.errors import DataError

            raise DataError.at("no canonical tables here", folder, fix="run `llmrec ingest` first")
        return cls(
            items=pd.read_parquet(folder / "items.parquet"),
            impressions=pd.read_parquet(folder / "impressions.parquet"),
            interactions=pd.read_parquet(folder / "interactions.parquet"),
        )

    def restrict(self, impression_ids: pd.Index | pd.Series) -> "Dataset":
        """The same dataset cut to the given impressions (items are kept whole)."""
        keep = set(impression_ids)
        imps = self.impressions[self.impressions["impression_id"].isin(keep)]
        inter = self.interactions[self.interactions["impression_id"].isin(keep)]
        return Dataset(self.items, imps.reset_index(drop=True), inter.reset_index(drop=True))

    @property
    def n_labeled(self) -> int:
        return int((self.interactions["label"] != UNLABELED).sum())


def history_list(history: str) -> list[str]:
    """Split a space-separated history into item ids ('' -> [])."""
    return history.split() if history else []
