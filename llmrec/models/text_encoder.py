"""A frozen text encoder: the backbone's mean-pooled, L2-normalised item-text vectors, each text encoded once.

Used where the backbone is not trained: the zero-shot baseline, drift's item-text embeddings and the hybrid
recommender's text part (which learns a projection on top). The two-tower model trains its encoder (with the same
`mean_pool`) and keeps its own cache.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

from llmrec.errors import ModelError


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Unit vectors: attention-masked mean of the last hidden states, L2-normalised (float32)."""
    hidden = hidden.float()
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
    return torch.nn.functional.normalize(pooled, dim=-1)


class FrozenTextEncoder:
    """Text -> unit vector (hidden size of the backbone), eval mode, no gradients, cached by text."""

    def __init__(self, folder: str | Path, max_length: int = 64, device: str | torch.device = "cpu") -> None:
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        from llmrec.models.io import pick_device

        hf_logging.set_verbosity_error()  # hides load reports (e.g. llmrec's own extra keys in a saved folder)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
            self.model = AutoModel.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot load a model from the folder: {exc}", where=str(folder)) from exc
        self.device = pick_device(str(device)) if not isinstance(device, torch.device) else device
        self.model.to(self.device).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.max_length = max_length
        self.dim = int(self.model.config.hidden_size)
        self.encoded = 0  # texts passed through the backbone (for tests and stats)
        self._rows: dict[str, int] = {}
        self._store = torch.empty(0, self.dim)
        self._lock = threading.RLock()

    def encode(self, texts: Sequence[str], batch_size: int = 64, progress: bool = False, remember: bool = True) -> torch.Tensor:
        """(len(texts), dim) float32 unit vectors on the CPU; texts not seen before are encoded now and, with
        `remember`, cached (a service passes remember=False for request texts, so they cannot grow memory)."""
        if not remember:
            with self._lock:
                known = [t for t in texts if t in self._rows]
            fresh = sorted(dict.fromkeys(t for t in texts if t not in self._rows), key=len)
            vectors = dict(zip(known, self.encode(known))) if known else {}
            if fresh:
                vectors.update(zip(fresh, torch.cat(self._run(fresh, batch_size, progress)[1])))
            return torch.stack([vectors[t] for t in texts]) if texts else torch.empty(0, self.dim)
        with self._lock:
            missing = sorted({t for t in texts if t not in self._rows}, key=len)  # similar lengths per batch
            missing, parts = self._run(missing, batch_size, progress)
            if parts:
                first = len(self._store)
                self._store = torch.cat([self._store, *parts])
                self._rows.update({t: first + k for k, t in enumerate(missing)})
                self.encoded += len(missing)
            index = torch.as_tensor([self._rows[t] for t in texts], dtype=torch.long)
            return self._store[index]

    def _run(self, texts: list[str], batch_size: int, progress: bool) -> tuple[list[str], list[torch.Tensor]]:
        """(texts, their vectors): in batches through the backbone (vectors as a list of batch tensors)."""
        parts = []
        with torch.inference_mode():
            for start in tqdm(range(0, len(texts), batch_size), desc="encoding item texts", unit="batch",
                              disable=not progress, leave=False):
                chunk = texts[start : start + batch_size]
                batch = self.tokenizer(chunk, truncation=True, max_length=self.max_length, padding=True, return_tensors="pt")
                batch = {k: v.to(self.device) for k, v in batch.items()}
                parts.append(mean_pool(self.model(**batch).last_hidden_state, batch["attention_mask"]).cpu())
        return texts, parts

    def save(self, folder: str | Path) -> None:
        """The backbone's own files (config, weights, tokenizer), so a saved model folder is self-contained."""
        self.model.save_pretrained(folder, safe_serialization=True, max_shard_size="1000GB")
        self.tokenizer.save_pretrained(folder)
