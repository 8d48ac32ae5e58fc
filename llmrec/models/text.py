"""Text rendering: how users and items become text. Shared by training, evaluation and serving."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import pandas as pd


@dataclass(frozen=True)
class TextConfig:
    max_history: int = 5        # most recent history items shown
    with_category: bool = True  # prefix item titles with "category / subcategory:"
    separator: str = " | "

    def to_dict(self) -> dict:
        return asdict(self)


def item_texts(items: pd.DataFrame, config: TextConfig) -> dict[str, str]:
    """item_id -> the text that stands for the item."""
    titles = items["title"].astype(str)
    if config.with_category:
        titles = items["category"].astype(str) + " / " + items["subcategory"].astype(str) + ": " + titles
    return dict(zip(items["item_id"], titles))


def user_text(history: list[str], texts: dict[str, str], config: TextConfig) -> str:
    """The user's most recent history items, newest first (unknown ids are skipped)."""
    if config.max_history == 0:
        return ""
    recent = [texts[i] for i in reversed(history) if i in texts][: config.max_history]
    return config.separator.join(recent) if recent else "no history"
