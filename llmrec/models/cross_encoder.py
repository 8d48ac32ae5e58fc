"""Cross-encoder ranker: (user text, candidate text) -> relevance score, one transformer pass per pair."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from llmrec.errors import ModelError
from llmrec.models.io import pick_device, read_meta, write_meta
from llmrec.models.text import TextConfig

log = logging.getLogger(__name__)


@dataclass
class CrossEncoder:
    """A pair scorer: [history texts] [SEP] [candidate text] -> relevance, one transformer pass per pair."""

    ranks_catalogue = False  # one pass per (user, item): it re-ranks short lists
    model: torch.nn.Module
    tokenizer: object
    text: TextConfig
    max_length: int
    backbone: str
    device: torch.device = torch.device("cpu")

    @classmethod
    def from_backbone(
        cls, folder: Path, text: TextConfig, max_length: int, backbone: str, device: str = "auto"
    ) -> "CrossEncoder":
        """A fresh cross-encoder: the backbone plus a randomly initialised 1-output head."""
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
            model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=1, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot load a model from the folder: {exc}", where=str(folder)) from exc
        dev = pick_device(device)
        return cls(model.to(dev), tokenizer, text, max_length, backbone, dev)

    @classmethod
    def load(cls, folder: str | Path, device: str = "auto") -> "CrossEncoder":
        """Load a model folder written by `save`."""
        folder = Path(folder)
        meta = read_meta(folder, expect="cross-encoder")
        return cls.from_backbone(folder, TextConfig.from_dict(meta["text"]), meta["max_length"], meta["backbone"], device)

    def save(self, folder: str | Path) -> Path:
        """Weights as safetensors, the tokenizer and the text-rendering config."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(folder, safe_serialization=True)
        self.tokenizer.save_pretrained(folder)
        meta = {"type": "cross-encoder", "text": self.text.to_dict(), "max_length": self.max_length, "backbone": self.backbone}
        write_meta(folder, meta)
        return folder

    def encode(self, users: list[str], items: list[str]) -> dict[str, torch.Tensor]:
        """Tokenize pairs, padded to the longest pair in this batch (dynamic padding)."""
        batch = self.tokenizer(
            users, items, truncation="longest_first", max_length=self.max_length, padding=True, return_tensors="pt"
        )
        return {k: v.to(self.device) for k, v in batch.items()}

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model(**batch).logits.squeeze(-1)

    def score(self, users: list[str], items: list[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """Relevance scores of pairs (higher = better), batched, eval mode, no gradients.

        Pairs are sorted by length so each batch pads little, then returned in input order.
        """
        if len(users) != len(items):
            raise ValueError(f"got {len(users)} user texts for {len(items)} item texts")
        order = np.argsort([len(u) + len(i) for u, i in zip(users, items)], kind="stable")
        out = np.empty(len(users), dtype=np.float32)
        self.model.eval()
        starts = range(0, len(order), batch_size)
        with torch.inference_mode():
            for start in tqdm(starts, desc="scoring", unit="batch", disable=not progress, leave=False):
                idx = order[start : start + batch_size]
                batch = self.encode([users[i] for i in idx], [items[i] for i in idx])
                out[idx] = self.forward(batch).float().cpu().numpy()
        return out

    def text_scorer(self, items_df=None, batch_size: int = 64):
        """(history texts, oldest first; candidate texts) -> scores: the user text rendered as in training."""
        from llmrec.models.text import render_user

        def score(history, candidates) -> np.ndarray:
            user = render_user(history, self.text)
            return self.score([user] * len(candidates), list(candidates), batch_size=batch_size)

        return score

    def catalogue_scorer(self, items_df, batch_size: int = 64):
        raise ModelError(
            "a CrossEncoder scores (user, item) pairs one transformer pass each: it cannot rank a whole catalogue "
            "for many users", fix="use a two-tower or hybrid model (model.type)")

    def scorer(self, items_df, batch_size: int = 64, progress: bool = False):
        """(frame with history, item_id) -> relevance scores, rendering texts exactly as in training."""
        from llmrec.data.contract import history_list
        from llmrec.models.text import item_texts, user_text

        texts = item_texts(items_df, self.text)

        def score(frame) -> np.ndarray:
            users = [user_text(history_list(h), texts, self.text) for h in frame["history"]]
            return self.score(users, [texts.get(i, i) for i in frame["item_id"]], batch_size=batch_size, progress=progress)

        return score
