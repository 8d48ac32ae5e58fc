"""Two-tower (bi-encoder) recommender: one transformer pass per *item*, not per (user, item) pair.

Item tower   the backbone encodes the item text (`item_texts`, the same rendering as everywhere
             else); attention-masked mean pooling of the last hidden states, L2-normalised.
User tower   pools the item vectors of the user's history: the most recent `text.max_history`
             known items, newest first. `pooling="mean"`: their mean, L2-normalised.
             `pooling="attention"`: softmax over history positions of q . (v_i + r_i), where q is a
             learned query vector and r_i a learned recency embedding of position i (0 = newest);
             the user is the L2-normalised weighted sum of the v_i. q and r start at zero, so an
             untrained attention tower *is* mean pooling.
             An empty history (or none of its ids in the catalogue) gives a learned "no history"
             vector (one parameter of size hidden, L2-normalised like every user vector).
Score        dot(user, item) / temperature (fixed, 0.05, stored in llmrec.json); both unit vectors,
             so scores lie in [-20, 20].

Because the towers only meet in a dot product, item vectors are computed once and cached
(`encode_items`): evaluation and serving encode each catalogue item once, and ranking a whole
catalogue for one user is one matrix-vector product. The cache is keyed by the item text and
dropped whenever the weights change: `version` is bumped by training and by `load_weights`, and
the in-place version counters of the backbone's parameters are checked as a safety net.

A saved folder is a plain Hugging Face folder (config.json, tokenizer files, model.safetensors)
plus llmrec.json ({"type": "two-tower", ...}). The user-tower parameters live in the same
model.safetensors under the key prefix "llmrec.user_tower.", so `fingerprint` (the sha256 of that
file, `llmrec.models.io`) covers every weight of the model. Nothing is pickled. Scoring frames, catalogues
and top-k lists is `llmrec.models.vector.VectorRanker`'s, shared with the hybrid.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from llmrec.data.contract import history_list
from llmrec.errors import ModelError
from llmrec.models.io import WEIGHTS_FILE, fingerprint, pick_device, read_meta, write_meta
from llmrec.models.text import TextConfig, item_texts
from llmrec.models.text_encoder import mean_pool
from llmrec.models.vector import VectorRanker

log = logging.getLogger(__name__)

MODEL_TYPE = "two-tower"
TOWER_PREFIX = "llmrec.user_tower."
DEFAULT_TEMPERATURE = 0.05
DEFAULT_MAX_HISTORY = 20   # history items pooled by the user tower when the config does not say otherwise
POOLINGS = ("mean", "attention")
USER_BLOCK = 1024          # histories pooled at once



def recent_known(history: str | Sequence[str], known: Mapping[str, object], max_history: int) -> list[str]:
    """The most recent `max_history` history ids that are in `known`, newest first (unknown ids skipped)."""
    ids = history_list(history) if isinstance(history, str) else list(history)
    if max_history <= 0:
        return []
    return [i for i in reversed(ids) if i in known][:max_history]


class UserTower(torch.nn.Module):
    """History item vectors (U, L, H) + mask (U, L) -> unit user vectors (U, H). See the module docstring."""

    def __init__(self, hidden: int, max_history: int, pooling: str = "mean", seed: int = 0) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ModelError(f"unknown pooling {pooling!r}", fix=f"use one of {', '.join(POOLINGS)}")
        self.pooling = pooling
        generator = torch.Generator().manual_seed(seed)  # the same fresh tower whatever the global RNG state
        self.no_history = torch.nn.Parameter(torch.randn(hidden, generator=generator) * 0.02)
        if pooling == "attention":
            self.query = torch.nn.Parameter(torch.zeros(hidden))
            self.recency = torch.nn.Parameter(torch.zeros(max(1, max_history), hidden))

    def forward(self, vectors: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        vectors = vectors * mask.unsqueeze(-1).to(vectors.dtype)  # padding positions hold zeros
        counts = mask.sum(1)
        if self.pooling == "mean" or vectors.shape[1] == 0:
            pooled = vectors.sum(1) / counts.clamp(min=1).unsqueeze(-1).to(vectors.dtype)
        else:
            keys = vectors + self.recency[: vectors.shape[1]].unsqueeze(0)
            logits = (keys @ self.query).masked_fill(~mask, torch.finfo(vectors.dtype).min)
            weights = torch.softmax(logits, dim=1) * mask.to(vectors.dtype)  # empty rows: all zero
            pooled = (weights.unsqueeze(-1) * vectors).sum(1)
        pooled = torch.where((counts > 0).unsqueeze(-1), pooled, self.no_history.to(pooled.dtype).expand_as(pooled))
        return torch.nn.functional.normalize(pooled, dim=-1)


class TwoTowerNet(torch.nn.Module):
    """Both towers as one module (what training optimises and DistributedDataParallel wraps).

    forward(chunks, restore, hist_index, hist_mask): `chunks` are tokenized batches of the step's
    unique item texts (sorted by length, so each pads little), `restore` puts their vectors back in
    the texts' order; returns (item vectors (n, hidden), user vectors (U, hidden)).
    """

    def __init__(self, encoder: torch.nn.Module, user_tower: "UserTower") -> None:
        super().__init__()
        self.encoder = encoder
        self.user_tower = user_tower

    def forward(
        self, chunks: list[dict[str, torch.Tensor]], restore: torch.Tensor, hist_index: torch.Tensor, hist_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        parts = [mean_pool(self.encoder(**chunk).last_hidden_state, chunk["attention_mask"]) for chunk in chunks]
        vectors = torch.cat(parts)[restore]
        return vectors, self.user_tower(vectors[hist_index], hist_mask)


class TwoTower(VectorRanker):
    """Item tower (backbone) + user tower (history pooling); score = dot / temperature."""


    def __init__(
        self,
        encoder: torch.nn.Module,
        tokenizer: object,
        text: TextConfig,
        max_length: int,
        backbone: str,
        device: torch.device = torch.device("cpu"),
        pooling: str = "mean",
        temperature: float = DEFAULT_TEMPERATURE,
        user_tower: UserTower | None = None,
    ) -> None:
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.text = text
        self.max_length = max_length
        self.backbone = backbone
        self.device = device
        self.pooling = pooling
        self.temperature = float(temperature)
        self.hidden_size = int(encoder.config.hidden_size)
        self.user_tower = user_tower if user_tower is not None else UserTower(self.hidden_size, text.max_history, pooling)
        self.net = TwoTowerNet(encoder, self.user_tower).to(device)
        self.version = 0            # bumped whenever the weights change (training steps, load_weights)
        self.encoded_texts = 0      # item texts passed through the backbone by encode_items (for tests / stats)
        self._cache_key: tuple[int, int] | None = None
        self._rows: dict[str, int] = {}
        self._store = torch.empty(0, self.hidden_size, device=device)
        self._lock = threading.RLock()  # serving may score from several threads; the cache grows under it

    def __repr__(self) -> str:
        return (
            f"TwoTower(backbone={self.backbone!r}, pooling={self.pooling!r}, hidden={self.hidden_size}, "
            f"max_history={self.text.max_history}, cached_items={len(self._rows)})"
        )

    # -- construction, persistence ------------------------------------------------------------------------------
    @classmethod
    def from_backbone(
        cls,
        folder: str | Path,
        text: TextConfig,
        max_length: int,
        backbone_name: str,
        device: str = "auto",
        pooling: str = "mean",
        temperature: float = DEFAULT_TEMPERATURE,
    ) -> "TwoTower":
        """A fresh two-tower model: the backbone as the item tower and an untrained user tower."""
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        if pooling not in POOLINGS:
            raise ModelError(f"unknown pooling {pooling!r}", fix=f"use one of {', '.join(POOLINGS)}")
        hf_logging.set_verbosity_error()  # also hides the "unexpected llmrec.user_tower.* keys" load report
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
            encoder = AutoModel.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot load a model from the folder: {exc}", where=str(folder)) from exc
        return cls(encoder, tokenizer, text, max_length, backbone_name, pick_device(device), pooling, temperature)

    @staticmethod
    def read_meta(folder: str | Path) -> dict:
        return read_meta(folder, expect=MODEL_TYPE)

    @classmethod
    def load(cls, folder: str | Path, device: str = "auto") -> "TwoTower":
        """Load a model folder written by `save`."""
        meta = cls.read_meta(folder)
        model = cls.from_backbone(
            folder, TextConfig.from_dict(meta["text"]), meta["max_length"], meta["backbone"], device,
            pooling=meta["pooling"], temperature=meta["temperature"],
        )
        model.user_tower.load_state_dict(_tower_state(folder), strict=True)
        model.mark_changed()
        return model

    def load_weights(self, folder: str | Path) -> "TwoTower":
        """Replace this model's weights in place with those of a saved two-tower folder of the same shape.

        The item cache is dropped (the version is bumped), so nothing encoded with the old weights is reused.
        """
        from safetensors.torch import load_file

        meta = self.read_meta(folder)
        if meta["pooling"] != self.pooling or meta.get("hidden_size", self.hidden_size) != self.hidden_size:
            raise ModelError(
                f"cannot load a {meta['pooling']} model of hidden size {meta.get('hidden_size')} into a "
                f"{self.pooling} model of hidden size {self.hidden_size}",
                where=str(folder), fix="use TwoTower.load(folder) instead",
            )
        state = load_file(str(Path(folder) / WEIGHTS_FILE))
        encoder_state = {k: v for k, v in state.items() if not k.startswith(TOWER_PREFIX)}
        missing, unexpected = self.encoder.load_state_dict(encoder_state, strict=False)
        if unexpected or [k for k in missing if not k.endswith("position_ids")]:
            raise ModelError(
                f"weights do not fit this backbone (missing {missing[:3]}, unexpected {unexpected[:3]})",
                where=str(folder), fix="use TwoTower.load(folder) instead",
            )
        self.user_tower.load_state_dict(_tower_state(folder), strict=True)
        self.text = TextConfig.from_dict(meta["text"])
        self.max_length = meta["max_length"]
        self.temperature = float(meta["temperature"])
        self.mark_changed()
        return self

    def save(self, folder: str | Path) -> Path:
        """model.safetensors (backbone + user tower), config.json, tokenizer files and llmrec.json."""
        from safetensors.torch import load_file, save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.encoder.save_pretrained(folder, safe_serialization=True, max_shard_size="1000GB")
        weights = folder / WEIGHTS_FILE
        if not weights.is_file():
            raise ModelError("the backbone was not saved as one model.safetensors file", where=str(folder))
        state = load_file(str(weights))
        for name, value in self.user_tower.state_dict().items():
            state[TOWER_PREFIX + name] = value.detach().to("cpu", torch.float32).contiguous()
        save_file(state, str(weights), metadata={"format": "pt"})
        self.tokenizer.save_pretrained(folder)
        meta = {
            "type": MODEL_TYPE,
            "text": self.text.to_dict(),
            "max_length": self.max_length,
            "backbone": self.backbone,
            "pooling": self.pooling,
            "temperature": self.temperature,
            "hidden_size": self.hidden_size,
        }
        write_meta(folder, meta)
        return folder

    fingerprint = staticmethod(fingerprint)

    # -- item tower ------------------------------------------------------------------------------------------------
    def mark_changed(self) -> None:
        """Call after changing weights: bumps `version`, which drops the item cache."""
        self.version += 1

    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        """Unit item vectors (n, hidden), float32, on the model's device; gradients follow the caller's context."""
        batch = self.tokenize(texts)
        return mean_pool(self.encoder(**batch).last_hidden_state, batch["attention_mask"])

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Item texts as one batch padded to its longest text, on the model's device."""
        batch = self.tokenizer(texts, truncation=True, max_length=self.max_length, padding=True, return_tensors="pt")
        return {k: v.to(self.device) for k, v in batch.items()}

    def replace_encoder(self, encoder: torch.nn.Module) -> None:
        """Swap the item tower's backbone module (e.g. for its LoRA-wrapped or merged form); drops the cache."""
        self.encoder = self.net.encoder = encoder
        self.mark_changed()

    def _check_cache(self) -> None:
        weights = sum(int(getattr(p, "_version", 0)) for p in self.encoder.parameters())  # in-place updates bump these
        key = (self.version, weights)
        if key != self._cache_key:
            if self._rows:
                log.debug("weights changed: dropping %d cached item vectors", len(self._rows))
            self._rows = {}
            self._store = torch.empty(0, self.hidden_size, device=self.device)
            self._cache_key = key

    def clear_cache(self) -> None:
        with self._lock:
            self._rows, self._cache_key = {}, None
            self._store = torch.empty(0, self.hidden_size, device=self.device)

    def encode_items(
        self,
        item_ids: Sequence[str],
        texts: Mapping[str, str] | Sequence[str],
        batch_size: int = 64,
        progress: bool = False,
    ) -> torch.Tensor:
        """Unit vectors (len(item_ids), hidden) of the items, from the cache where possible.

        `texts`: item_id -> text (as `item_texts` returns; an id missing from it is encoded as its
        id, as the cross-encoder does) or a list of texts aligned with `item_ids`. The cache is keyed
        by text, so an item whose text changed is re-encoded. Eval mode, no gradients.
        """
        if isinstance(texts, Mapping):
            keys = [texts.get(i, i) for i in item_ids]
        else:
            keys = list(texts)
            if len(keys) != len(item_ids):
                raise ValueError(f"got {len(keys)} texts for {len(item_ids)} item ids")
        with self._lock:
            self._check_cache()
            missing = [t for t in dict.fromkeys(keys) if t not in self._rows]
            if missing:
                missing.sort(key=len)  # similar lengths per batch: little padding
                was_training = self.net.training
                self.net.eval()
                parts = []
                with torch.inference_mode():
                    for start in tqdm(range(0, len(missing), batch_size), desc="encoding items", unit="batch",
                                      disable=not progress, leave=False):
                        parts.append(self.embed_texts(missing[start : start + batch_size]))
                self.net.train(was_training)
                first = len(self._store)
                self._store = torch.cat([self._store, *parts])
                self._rows.update({t: first + k for k, t in enumerate(missing)})
                self.encoded_texts += len(missing)
            index = torch.as_tensor([self._rows[t] for t in keys], dtype=torch.long, device=self.device)
            return self._store[index]

    def item_matrix(self, items_df: pd.DataFrame, batch_size: int = 64, progress: bool = False) -> tuple[list[str], torch.Tensor]:
        """(item ids, unit vectors (n, hidden)) of the whole catalogue, encoded once and cached."""
        return self._matrix(self._texts(items_df), batch_size, progress)

    # -- user tower ------------------------------------------------------------------------------------------------
    def history_index(self, histories: Sequence[list[str]], rows: Mapping[str, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded (U, L) row indices into an item matrix and the (U, L) mask; histories are newest first."""
        width = max((len(h) for h in histories), default=0)
        index = np.zeros((len(histories), width), dtype=np.int64)
        mask = np.zeros((len(histories), width), dtype=bool)
        for u, hist in enumerate(histories):
            index[u, : len(hist)] = [rows[i] for i in hist]
            mask[u, : len(hist)] = True
        return torch.from_numpy(index).to(self.device), torch.from_numpy(mask).to(self.device)

    def user_vectors(
        self, histories: Sequence[str | Sequence[str]], texts: Mapping[str, str], batch_size: int = 64, progress: bool = False
    ) -> torch.Tensor:
        """Unit user vectors (len(histories), hidden): each history (space-separated or a list, oldest
        first) is cut to its most recent `text.max_history` ids known to `texts`. Eval mode, no gradients."""
        recent = [recent_known(h, texts, self.text.max_history) for h in histories]
        ids = list(dict.fromkeys(i for h in recent for i in h))
        vectors = self.encode_items(ids, texts, batch_size, progress) if ids else torch.empty(0, self.hidden_size, device=self.device)
        rows = {item: k for k, item in enumerate(ids)}
        was_training = self.net.training
        self.net.eval()
        out = []
        with torch.inference_mode():
            for start in range(0, len(recent), USER_BLOCK):
                index, mask = self.history_index(recent[start : start + USER_BLOCK], rows)
                out.append(self.user_tower(vectors[index], mask))
        self.net.train(was_training)
        return torch.cat(out) if out else torch.empty(0, self.hidden_size, device=self.device)

    # -- scoring ---------------------------------------------------------------------------------------------------
    def _texts(self, items_df: pd.DataFrame) -> dict[str, str]:
        return item_texts(items_df, self.text)

    def text_scorer(self, items_df: pd.DataFrame | None = None, batch_size: int = 64):
        """(history texts, oldest first; candidate texts) -> scores: `score_texts`, the catalogue's vectors
        (`items_df`) encoded now, once."""
        if items_df is not None:
            self.item_matrix(items_df, batch_size=batch_size)
        return lambda history, candidates: self.score_texts(history, candidates, batch_size=batch_size)

    def score_texts(self, history: Sequence[str], candidates: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Scores of candidate item *texts* for one user given by the texts of their history items (oldest first).

        The same computation as `score_frame` on ids whose texts these are. Texts in the item cache (the
        catalogue, once `item_matrix` ran) are looked up; any other text is encoded for this call only and
        not cached, so texts sent to a service cannot grow the cache. Eval mode, no gradients.
        """
        recent = list(reversed(history))[: self.text.max_history] if self.text.max_history > 0 else []
        texts = [*recent, *candidates]
        with self._lock:
            self._check_cache()
            rows = [self._rows.get(t) for t in texts]
            cached = [k for k, row in enumerate(rows) if row is not None]
            fresh = list(dict.fromkeys(t for t, row in zip(texts, rows) if row is None))
            fresh.sort(key=len)  # similar lengths per batch: little padding
            was_training = self.net.training
            self.net.eval()
            with torch.inference_mode():
                vectors = torch.empty(len(texts), self.hidden_size, device=self.device)
                if cached:
                    vectors[cached] = self._store[[rows[k] for k in cached]]
                if fresh:
                    encoded = torch.cat([self.embed_texts(fresh[s : s + batch_size]) for s in range(0, len(fresh), batch_size)])
                    at = {t: k for k, t in enumerate(fresh)}
                    missing = [k for k, row in enumerate(rows) if row is None]
                    vectors[missing] = encoded[[at[texts[k]] for k in missing]]
                mask = torch.ones(1, len(recent), dtype=torch.bool, device=self.device)
                user = self.user_tower(vectors[: len(recent)].unsqueeze(0), mask)[0]
                scores = (user.unsqueeze(0) * vectors[len(recent) :]).sum(-1) / self.temperature
            self.net.train(was_training)
        return scores.float().cpu().numpy()

    def item_vectors(self, item_ids: Sequence[str], texts: Mapping[str, str], batch_size: int = 64,
                     progress: bool = False) -> tuple[torch.Tensor, None]:
        """(unit vectors (n, hidden), no offsets) of the items, from the cache where possible."""
        return self.encode_items(item_ids, texts, batch_size, progress), None

    def _prepare_frame(self, items: Sequence[str], histories: Sequence[str], texts: Mapping[str, str], batch_size: int,
                       progress: bool) -> None:
        """Every item the frame needs (candidates and history items) encoded in one pass over full batches."""
        recent = [recent_known(h, texts, self.text.max_history) for h in histories]
        self.encode_items(list(dict.fromkeys([*items, *(i for h in recent for i in h)])), texts, batch_size, progress)

    def _matrix(self, texts: Mapping[str, str], batch_size: int = 64, progress: bool = False) -> tuple[list[str], torch.Tensor]:
        ids = list(texts)
        return ids, self.encode_items(ids, texts, batch_size, progress)


def _tower_state(folder: str | Path) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    path = Path(folder) / WEIGHTS_FILE
    if not path.is_file():
        raise ModelError("no model.safetensors in the model folder", where=str(folder), fix="run `llmrec train`")
    with safe_open(str(path), framework="pt") as fh:
        state = {k[len(TOWER_PREFIX):]: fh.get_tensor(k) for k in fh.keys() if k.startswith(TOWER_PREFIX)}
    if not state:
        raise ModelError("model.safetensors holds no user-tower weights", where=str(path), fix="save the model with TwoTower.save")
    return state
