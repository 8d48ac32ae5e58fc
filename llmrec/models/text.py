"""Text rendering: how users and items become text. Shared by training, evaluation and serving.

An item is rendered by `render_item` ("category / subcategory: title. details", details being the source's
other text: a MIND abstract, a movie's year, genres and tags; parts a source lacks are left out); a user by
`render_user`, from the texts of their history items. `item_texts` and `user_text` apply them to a
catalogue and to a history of item ids; serving applies them to raw texts sent in a request, so a
text the service has never seen is rendered exactly as a catalogue item would be.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import pandas as pd


@dataclass(frozen=True)
class TextConfig:
    max_history: int = 5        # most recent history items shown
    with_category: bool = True  # prefix item titles with "category / subcategory:"
    separator: str = " | "
    with_text: bool = True      # append the item's other text (the items table's `text`: abstract, year, genres, tags)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, saved: Mapping[str, object]) -> "TextConfig":
        """The rendering a saved model was trained with (models saved before `with_text` rendered without it)."""
        return cls(**{"with_text": False, **saved})


NO_HISTORY = "no history"


def render_item(title: str, category: str | None, subcategory: str | None, config: TextConfig, details: str | None = None) -> str:
    """The text that stands for one item: "category / subcategory: title" with categories, else the title, then
    ". details" when the config renders them and the item has any.

    Without a category (`None`) the title stands alone; a missing subcategory is rendered empty.
    """
    text = title if not config.with_category or category is None else f"{category} / {'' if subcategory is None else subcategory}: {title}"
    if config.with_text and details and details.strip():
        text = f"{text.rstrip('. ')}. {details.strip()}"
    return text


def item_texts(items: pd.DataFrame, config: TextConfig) -> dict[str, str]:
    """item_id -> the text that stands for the item."""
    titles = items["title"].astype(str)
    none = pd.Series([None] * len(items), index=items.index, dtype=object)
    categories = items["category"].astype(str) if config.with_category and "category" in items else none
    subcategories = items["subcategory"].astype(str) if config.with_category and "subcategory" in items else none
    details = items["text"].fillna("").astype(str) if config.with_text and "text" in items else none
    return {
        item: render_item(title, category, subcategory, config, detail)
        for item, title, category, subcategory, detail in zip(items["item_id"], titles, categories, subcategories, details)
    }


def render_user(history: Sequence[str], config: TextConfig) -> str:
    """The user text from the texts of their history items (oldest first): the most recent ones, newest first."""
    if config.max_history == 0:
        return ""
    recent = list(reversed(history))[: config.max_history]
    return config.separator.join(recent) if recent else NO_HISTORY


def user_text(history: list[str], texts: Mapping[str, str], config: TextConfig) -> str:
    """The user's most recent history items, newest first (unknown ids are skipped)."""
    return render_user([texts[i] for i in history if i in texts], config)
