"""Hybrid recommender: language-model item text + learned item ids, a transformer over the history.

Item          a text part v_i = normalize(t_i + A t_i), where t_i is the backbone's frozen, mean-pooled
              text vector of the item (computed once, `FrozenTextEncoder`) and A a learned adapter that
              starts at zero, and an id part e_i, a learned embedding of every item consumed in
              training. Items unknown to the model (cold: new since training, or only ever shown) have
              no id part, so they are scored by their text; training drops the id of a share
              `id_dropout` of the items each step so that the text part alone learns to rank. The text
              part has a learned weight per support bucket (log2 of the item's training consumptions;
              bucket 0 = no id), and an item's age (hours since the log first showed it, in log2 buckets)
              adds a learned offset: news goes stale, and a model that knows it stops over-ranking
              yesterday's hits.
User          causal transformers (SASRec-style: pre-norm layers, learned absolute positions in a
              left-padded window of `sequence_length` items, oldest to newest, padding never attended).
              The text part has one over the history's W v_i and the id part its own over the history's
              e_i: a SASRec inside the hybrid, which `id_loss` also trains alone on the items that have
              ids. The states at the newest position give u_id = normalize(H_id s_id) and, added to the
              mean of the history's v_i (the zero-shot user), u_text = normalize(mean v + H_text s_text),
              H_text starting at zero.
EASE part     with `ease`, the id part also adds s * sum over the history's items h of B[h, i], B being
              EASE's closed-form item-item weights (Steck 2019) of the training consumptions, fitted
              before training and fixed, s learned: the collaborative filter that is hard to beat on
              small logs, which the transformers then only have to correct. When scoring it reads the
              whole history, as the EASE baseline does (training: the items of each window so far). As
              vectors: which EASE items the user consumed, the item's column of B.
Zero-shot     with `zero_shot`, the score adds cos(mean of the history's t_h, t_i): the backbone as it is,
part          which training never sees (it would only wear the part down).
Blend         after training, with validation, each part's weight per blend group of the item (by its
              training support) and the age offset's weight are chosen on held-out consumptions
              (`llmrec.training.blend`); training itself never applies them.
Score         sum over parts of w_part,group(i) u_part . v_part,i / temperature + w_age a(age_i) (+ a set
              offset for items without an id, `new_item_offset`): one dot product. A text-only hybrid
              (`ids: false`) starts as exactly the zero-shot recommender (see `HybridNet`).

Training predicts, at every position of a user's item sequence, the next item, with a softmax over
the whole training catalogue (exact: every item is a negative, hard ones included) or, for large
catalogues, over the batch's own targets with the log-Q correction for their popularity (Yi et
al., RecSys 2019). With `text: false` this is SASRec trained with full cross-entropy, the sequence
baseline of the evaluation; with `ids: false` a text-only sequence model.

A saved folder is the backbone's own files plus the hybrid weights in the same model.safetensors
under the prefix "llmrec.hybrid." (so `fingerprint` covers them) with the item-id vocabulary in
its metadata, and llmrec.json ({"type": "hybrid", ...}). Nothing is pickled.

Why one module this long: the network and the saved model class share the score's layout (part columns, blend
groups, offsets); one module keeps them in step.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from llmrec.data.context import AGE_TOLERANCE_HOURS
from llmrec.data.contract import history_list
from llmrec.errors import ModelError
from llmrec.models.io import WEIGHTS_FILE, pick_device, read_meta, write_meta
from llmrec.models.io import fingerprint as _fingerprint
from llmrec.models.text import TextConfig, item_texts
from llmrec.models.vector import VectorRanker

log = logging.getLogger(__name__)

MODEL_TYPE = "hybrid"
PREFIX = "llmrec.hybrid."
VOCAB_KEY = "llmrec.hybrid.vocab"
UNKNOWN = 0
TEMPERATURE = 0.05
AGE_EDGES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)  # hours: item age buckets
SUPPORT_BUCKETS = 12  # text weights: no id, then log2 buckets of an item's training consumptions (1, 2-3, 4-7, ...)
PARTS = ("text", "zero_shot", "ids", "ease")  # the dot-product parts of a score, which the blend weighs
BLEND_GROUPS = (0, 1, 1, 2, 2, 3, 3, 4, 4, 4, 4, 4)  # support bucket -> blend group: no id, 1-3, 4-15, 16-63, 64+ consumptions
EASE_SCALE = 0.5  # start of the EASE score's weight (x 1/temperature: 10 logits per unit of EASE score)
USER_BLOCK = 512


@dataclass(frozen=True)
class HybridConfig:
    """The architecture a saved hybrid was built with (llmrec.json "config"). Its defaults are not the settings'
    (`llmrec.config.HybridParams` holds those): a default here is what a model saved before the field existed did,
    so an older folder loads as it was trained (`_upgrade`)."""

    dim: int = 128
    layers: int = 2
    heads: int = 2
    sequence_length: int = 50
    dropout: float = 0.2
    id_dropout: float = 0.3
    ease: bool = False  # the id part adds EASE's closed-form item-item score of the history (fixed weights, a learned scale)
    id_loss: float = 0.0
    text: bool = True
    ids: bool = True
    age: bool = True
    text_loss: float = 1.0
    zero_shot: bool = False  # add the zero-shot text score (backbone vectors as they are), its weight chosen after training
    cold_hours: float = 0.0
    temperature: float = TEMPERATURE
    # the id embeddings' start and input scale: SASRec's (small Xavier-normal rows, times sqrt(dim) into the encoder), which
    # gets its sequence model out of the popularity plateau; false: unit-norm rows fed as they are (models saved before)
    sasrec_init: bool = False

    @classmethod
    def from_params(cls, params: object) -> "HybridConfig":
        names = cls.__dataclass_fields__
        settings = params.model_dump()  # type: ignore[attr-defined]
        settings.update(settings.pop("experimental"))
        return cls(**{k: v for k, v in settings.items() if k in names}, sasrec_init=True)


class HybridNet(torch.nn.Module):
    """The trainable part: text adapter, id embeddings, the two sequence encoders and user heads, the offsets.

    An item has a text part v_text = normalize(t + A t) in the backbone's space (A starts at zero, so
    v_text starts as the zero-shot vector) and an id part e_id (random at start, as SASRec's; fixed zero
    for unknown items). A user has a text part u_text = normalize(mean of the history's v_text +
    H_text(state_text)) (H starts at zero: the zero-shot user) and an id part u_id = normalize(H_id(state_id)),
    each state the output of its own causal transformer (over W v_text, over e_id). So

        score = (u_text . v_text + u_id . e_id) / temperature + age offset

    (plus the zero-shot and EASE parts when on, each part weighed by the blend after training). A cold item
    keeps the text path, trained through id dropout. Every score is one dot product of [u_text | u_id] and
    [v_text | e_id], so a catalogue is one matrix product.
    """

    def __init__(self, config: HybridConfig, backbone_dim: int, n_ids: int, seed: int = 0, ease_items: int = 0) -> None:
        super().__init__()
        self.config = config
        generator = torch.Generator().manual_seed(seed)
        d = config.dim
        self.backbone_dim = backbone_dim if config.text else 0
        self.text_dim = d if config.text else 0  # the trained text part: dim wide, whatever the backbone's size
        if config.text:
            # weight of the text part in the score: 1 = the zero-shot scale; learned, so that a text that says little
            # about taste (or a lot) gets the weight it earns next to the ids
            # ... one per support bucket (log2 of the item's training consumptions; 0 = no id): an item with many
            # clicks can lean on its id, a new one has only its text
            self.text_scale = torch.nn.Parameter(torch.ones(SUPPORT_BUCKETS))
            # the item's text part: its backbone vector mapped to dim numbers, learned from a (semi-)orthogonal start (`_build`
            # of training starts it at the catalogue's principal directions), so the catalogue softmax costs dim, not the
            # backbone's size, per item
            self.text_in = torch.nn.Linear(backbone_dim, d, bias=False)
            with torch.no_grad():
                q, _ = torch.linalg.qr(torch.randn(max(backbone_dim, d), min(backbone_dim, d), generator=generator))
                self.text_in.weight.copy_(q[:d, :backbone_dim] if d >= backbone_dim else q[:backbone_dim, :d].T)
            self.proj = torch.nn.Linear(d, d, bias=False)  # the text encoder's input from the text part
            with torch.no_grad():
                self.proj.weight.copy_(torch.eye(d))
            self.text_head = torch.nn.Linear(d, d)
            torch.nn.init.zeros_(self.text_head.weight)
            torch.nn.init.zeros_(self.text_head.bias)
        # the zero-shot score cos(mean of the history's backbone vectors, the item's) beside the trained text part: training
        # on the catalogue softmax reshapes the text part for what gets shown and clicked and wears down its ranking among
        # items that were all shown, which the backbone alone ranks well. Not trained (on its own training data the
        # trained part always looks better): the blend weighs it after training
        self.zero_shot_dim = backbone_dim if config.text and config.zero_shot else 0
        if config.ids:
            self.ids = torch.nn.Embedding(n_ids + 1, d, padding_idx=UNKNOWN)  # row 0 stays zero: no id part
            # a random start, as SASRec's (the id part has its own user encoder): its small Xavier-normal rows, read
            # times sqrt(dim) (`id_input_scale`). A unit-norm start gives every item random logits of several units and
            # held training at the popularity solution (bench/results/sasrec_init.md)
            std = math.sqrt(2.0 / (n_ids + 1 + d)) if config.sasrec_init else 1.0 / math.sqrt(d)
            self.id_input_scale = math.sqrt(d) if config.sasrec_init else 1.0
            with torch.no_grad():
                self.ids.weight.normal_(0.0, std, generator=generator)
                self.ids.weight[UNKNOWN].zero_()
            self.id_head = torch.nn.Linear(d, d)
            with torch.no_grad():
                self.id_head.weight.copy_(torch.eye(d))
                self.id_head.bias.zero_()
        self.ease_items = ease_items if config.ids and config.ease else 0
        if self.ease_items:
            # EASE (Steck 2019) over the `ease_items` most consumed items, fitted in closed form before training and
            # fixed: ease_index maps an id row to its row/column of item_item (0 = none, as for items without an id)
            self.register_buffer("ease_index", torch.zeros(n_ids + 1, dtype=torch.long))
            self.register_buffer("item_item", torch.zeros(self.ease_items + 1, self.ease_items + 1))
            self.ease_scale = torch.nn.Parameter(torch.tensor(EASE_SCALE))
        # support bucket of each id row (log2 of the item's training consumptions, 0 = no id): the text weight and the blend
        self.register_buffer("support", torch.zeros(n_ids + 1, dtype=torch.long))
        # how the parts combine when scoring (PARTS, per blend group of the item; offsets: the age offset's weight),
        # chosen after training on held-out consumptions none of the parts trained on (`llmrec.training.blend`); training
        # itself never applies it
        self.register_buffer("blend", torch.ones(max(BLEND_GROUPS) + 1, len(PARTS)))
        self.register_buffer("offset_scale", torch.ones(1))
        # score offset of items without an id (new since training) when scoring: a freshness boost (`new_item_offset`)
        self.register_buffer("no_id_offset", torch.zeros(1))
        self.age = torch.nn.Embedding(len(AGE_EDGES) + 2, 1)  # 0 = age unknown, then log2 buckets of hours
        torch.nn.init.zeros_(self.age.weight)
        self.register_buffer("age_edges", torch.tensor(AGE_EDGES, dtype=torch.float32), persistent=False)
        self.position, self.encoder, self.out_norm = self._sequence_encoder(generator)
        if self.separate:  # the id part's own user encoder over id embeddings alone: SASRec inside the hybrid
            self.id_position, self.id_encoder, self.id_out_norm = self._sequence_encoder(generator)
        self.input_dropout = torch.nn.Dropout(config.dropout)

    def _sequence_encoder(self, generator: torch.Generator) -> tuple[torch.nn.Embedding, torch.nn.TransformerEncoder, torch.nn.LayerNorm]:
        """(positions, pre-norm causal transformer, output norm) of one user encoder."""
        c, d = self.config, self.config.dim
        position = torch.nn.Embedding(c.sequence_length, d)
        with torch.no_grad():
            position.weight.normal_(0.0, 0.02, generator=generator)
        layer = torch.nn.TransformerEncoderLayer(
            d, c.heads, dim_feedforward=2 * d, dropout=c.dropout, activation="gelu", batch_first=True, norm_first=True
        )
        return position, torch.nn.TransformerEncoder(layer, c.layers, enable_nested_tensor=False), torch.nn.LayerNorm(d)

    @property
    def separate(self) -> bool:
        """Whether the text part and the id part have their own user encoders (both present): the id part is a SASRec."""
        return self.config.text and self.config.ids

    def init_text_in(self, vectors: torch.Tensor) -> None:
        """Start the text part's map at the principal directions of the catalogue's backbone vectors (N, backbone_dim),
        so the text part starts as close to the backbone's cosine as dim numbers allow."""
        unit = torch.nn.functional.normalize(vectors.float(), dim=-1)
        _, _, vh = torch.linalg.svd(unit, full_matrices=False)
        k = min(self.text_dim, vh.shape[0])
        with torch.no_grad():
            self.text_in.weight[:k] = vh[:k].to(self.text_in.weight.device)

    def part_columns(self) -> dict[str, slice]:
        """The columns of the scoring vectors each present part occupies (see PARTS)."""
        spans = {"text": self.text_dim, "zero_shot": self.zero_shot_dim, "ids": self.config.dim if self.config.ids else 0,
                 "ease": self.ease_items + 1 if self.ease_items else 0}
        out, start = {}, 0
        for name in PARTS:
            if spans[name]:
                out[name] = slice(start, start + spans[name])
                start += spans[name]
        return out

    def _blend_weights(self, ids: torch.Tensor) -> torch.Tensor:
        """(N, width) weight of every column of the items' scoring vectors: their blend group's weight of the column's part."""
        groups = torch.as_tensor(BLEND_GROUPS, device=ids.device)[self.support[ids]]
        column_part = torch.cat([torch.full((c.stop - c.start,), PARTS.index(n), device=ids.device) for n, c in self.part_columns().items()])
        return self.blend[groups][:, column_part]

    @property
    def width(self) -> int:
        """Size of the scoring vectors: text part (+ zero-shot part) + id part (+ the EASE part: one entry per EASE item and
        one for none)."""
        return self.text_width + (self.config.dim if self.config.ids else 0) + (self.ease_items + 1 if self.ease_items else 0)

    @property
    def text_width(self) -> int:
        """Size of the vectors' text parts: the trained one and the zero-shot one."""
        return self.text_dim + self.zero_shot_dim

    def items(self, text: torch.Tensor | None, ids: torch.Tensor, with_ease: bool = True,
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(scoring vectors (N, width), encoder inputs (N, dim), or (N, 2 dim) with both parts: text inputs
        then id inputs, biases (N,), text parts (N, text_width): the trained one then the unit backbone vector, or None)
        from backbone text vectors (N, backbone_dim) and id rows (N,).
        `with_ease` False leaves the EASE part (the item's column of item_item) out of the vectors (training adds
        its score directly)."""
        parts, inputs, v_text = [], torch.zeros(len(ids), self.config.dim, device=ids.device), None
        if self.config.text:
            v_text = torch.nn.functional.normalize(self.text_in(text), dim=-1)
            parts.append(self.text_scale[self.support[ids]].unsqueeze(-1) * v_text)
            inputs = inputs + self.proj(v_text)
            if self.zero_shot_dim:
                unit = torch.nn.functional.normalize(text, dim=-1)
                parts.append(unit)
                v_text = torch.cat([v_text, unit], dim=-1)
        if self.config.ids:
            e_id = self.ids(ids)  # row 0 -> 0
            parts.append(e_id)
            e_in = e_id * self.id_input_scale
            inputs = torch.cat([inputs, e_in], dim=-1) if self.separate else inputs + e_in
            if self.ease_items and with_ease:
                parts.append(self.item_item[:, self.ease_index[ids]].T)
        vectors = torch.cat(parts, dim=-1)
        bias = torch.zeros(len(ids), device=ids.device)
        if not self.training:  # choices made after training (the blend, a new-item offset): training never applies them
            vectors = vectors * self._blend_weights(ids)[:, : vectors.shape[1]]  # without EASE (with_ease False): it is last
            bias = bias + self.no_id_offset * (ids == UNKNOWN)
        return vectors, inputs, bias, v_text

    def users(self, inputs: torch.Tensor, texts: torch.Tensor | None, mask: torch.Tensor, last: bool = False,
              ease_counts: torch.Tensor | None = None) -> torch.Tensor:
        """History encoder inputs (U, L, dim) and text parts (U, L, text_width), left-padded (mask False at
        padding) -> user vectors (U, L, width) at every position, or (U, width) at the newest one (`last`);
        position t only sees items up to t. With EASE and `last`, `ease_counts` (U, ease_items + 1: how often
        each EASE item occurs in the window, column 0 unused) gives the EASE part; without them it
        is left out (training adds the EASE score directly)."""
        full = inputs.shape[1]
        start = self._first_needed(mask)  # leading columns that are padding in every row: nothing to compute there
        inputs, mask = inputs[:, start:], mask[:, start:]
        texts = texts[:, start:] if texts is not None else None
        length = inputs.shape[1]
        keep = mask.unsqueeze(-1).to(inputs.dtype)
        attention = self._attention_mask(mask, inputs.dtype)

        def encode(x: torch.Tensor, position: torch.nn.Embedding, encoder: torch.nn.Module, norm: torch.nn.Module) -> torch.Tensor:
            x = (x + position.weight[-length:]) * keep  # padding positions hold zeros
            return norm(encoder(self.input_dropout(x), mask=attention))

        if self.separate:
            d = self.config.dim
            states = encode(inputs[..., :d], self.position, self.encoder, self.out_norm)
            id_states = encode(inputs[..., d:], self.id_position, self.id_encoder, self.id_out_norm)
        else:
            states = id_states = encode(inputs, self.position, self.encoder, self.out_norm)
        parts = []
        if self.config.text:
            seen = (texts * keep).cumsum(1) / keep.cumsum(1).clamp(min=1.0)  # mean of the history so far (zero-shot user)
            parts.append(torch.nn.functional.normalize(seen[..., : self.text_dim] + self.text_head(states), dim=-1))
            if self.zero_shot_dim:
                parts.append(torch.nn.functional.normalize(seen[..., self.text_dim :], dim=-1))
        if self.config.ids:
            parts.append(torch.nn.functional.normalize(self.id_head(id_states), dim=-1))
        if last:
            parts = [p[:, -1] for p in parts]
        elif start:
            parts = [torch.nn.functional.pad(p, (0, 0, full - length, 0)) for p in parts]
        if self.ease_items and ease_counts is not None and last:
            parts.append(self.ease_scale * ease_counts.index_fill(1, torch.zeros(1, dtype=torch.long, device=ease_counts.device), 0.0))
        return torch.cat(parts, dim=-1)

    @staticmethod
    def _first_needed(mask: torch.Tensor) -> int:
        """The first column of left-padded windows (U, L) any row needs: one before the earliest real item (the position
        a first item is predicted from), 0 when a row is full, L - 1 when every row is empty."""
        real = mask.any(0)
        if not bool(real.any()):
            return mask.shape[1] - 1
        return max(0, int(real.to(torch.int8).argmax()) - 1)

    def _attention_mask(self, mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """(U * heads, L, L) additive mask: a position attends to itself and to the real (non-padding) items before it
        (SASRec's causal attention with key masking), so the number of padding positions changes nothing."""
        length = mask.shape[1]
        eye = torch.eye(length, dtype=torch.bool, device=mask.device)
        allowed = torch.ones(length, length, dtype=torch.bool, device=mask.device).tril() & (mask.unsqueeze(1) | eye)
        bias = torch.zeros(allowed.shape, dtype=dtype, device=mask.device).masked_fill(~allowed, float("-inf"))
        return bias.repeat_interleave(self.config.heads, dim=0)

    def ease_counts(self, id_rows: Sequence[torch.Tensor]) -> torch.Tensor:
        """(U, ease_items + 1): which EASE items each user's history holds (1 = consumed, however often and however long
        ago: EASE reads the whole history, as the EASE baseline does); column 0 stands for the items EASE does not model."""
        counts = torch.zeros(len(id_rows), self.ease_items + 1, device=self.item_item.device)
        for u, rows in enumerate(id_rows):
            if len(rows):
                counts[u, self.ease_index[rows.to(counts.device)]] = 1.0
        return counts

    def age_bias(self, hours: torch.Tensor) -> torch.Tensor:
        """Score offset of an item that age (hours since the log first showed it; NaN = unknown)."""
        if not self.config.age:
            return torch.zeros_like(hours)
        bucket = torch.where(torch.isnan(hours), 0, torch.bucketize(hours.nan_to_num(0.0), self.age_edges) + 1)
        offset = self.age(bucket).squeeze(-1)
        return offset if self.training else offset * self.offset_scale

    def forward(self, text: torch.Tensor | None, ids: torch.Tensor, inputs: torch.Tensor, targets: torch.Tensor,
                log_q: torch.Tensor | None = None, target_hours: torch.Tensor | None = None,
                first_seen: torch.Tensor | None = None, consumed_only: bool = False, hide_fresh_ids: bool = True,
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Training pass over windows: `inputs`/`targets` (B, L) catalogue rows (-1 = padding). Returns the logits
        of every real target position over the catalogue (`log_q` None) or over the batch's own targets with
        the log-Q correction, the index of the right answer in each row, and (with `text_loss`) the logits of
        the text part alone, which training also fits so that cold items get a ranker, and (with `id_loss`) those of the
        id part alone over the items that have an id (-inf elsewhere). With `target_hours` (B, L) and
        `first_seen` (N,) (hours, NaN = unknown) an item's age at the target's time adds `age_bias`, and
        items the log had not shown yet at that time are no candidates. With `consumed_only` (positive-only
        logs: an item appears only by being consumed) an item not consumed before the target's time is a
        candidate of unknown age and, like a fresh one, without its id part: its first consumption may be
        the very target, which must not give it away. `hide_fresh_ids` False keeps every id (scoring as at inference)."""
        vectors, inputs_vec, bias, v_text = self.items(text, ids, with_ease=False)
        mask = inputs >= 0
        rows = inputs.clamp(min=0)
        users = self.users(inputs_vec[rows], v_text[rows] if v_text is not None else None, mask)
        real = targets >= 0
        u, t = users[real], targets[real]
        cands, answer = (None, t) if log_q is None else torch.unique(t, return_inverse=True)
        pool = vectors if cands is None else vectors[cands]
        width, temp = self.text_width, self.config.temperature
        text_logits = u[:, : self.text_dim] @ pool[:, : self.text_dim].T / temp if self.config.text else 0.0
        if self.zero_shot_dim and not self.training:  # scored as at inference (validation): the zero-shot part too
            text_logits = text_logits + u[:, self.text_dim : width] @ pool[:, self.text_dim : width].T / temp
        id_logits = u[:, width:] @ pool[:, width:].T / temp if self.config.ids else 0.0
        if self.ease_items:  # sum over the history so far of item_item[h, candidate], the same as the vectors' EASE part
            index = torch.where(mask, self.ease_index[ids[rows]], 0)
            history = self.item_item[index].masked_fill(~mask.unsqueeze(-1), 0.0).cumsum(1)[real]
            candidates = self.ease_index[ids if cands is None else ids[cands]]
            id_logits = id_logits + self.ease_scale * history[:, candidates] / temp
        offsets = (bias if cands is None else bias[cands] - log_q[cands]).unsqueeze(0).expand(len(u), -1)
        ages, age_offset, fresh = None, 0.0, None
        if target_hours is not None and first_seen is not None:
            ages = target_hours[real].unsqueeze(1) - (first_seen if cands is None else first_seen[cands]).unsqueeze(0)
            new = None
            if consumed_only:
                new = ~(ages > AGE_TOLERANCE_HOURS)  # NaN too
                ages = ages.masked_fill(new, float("nan"))
            if self.config.ids and hide_fresh_ids and (self.config.cold_hours or new is not None):
                # items younger than cold_hours at the target's time play unknown items: no id part, the unknown
                # offset; that is what an item new since training is at serving time, so the model learns its scale
                fresh = (ages >= 0) & (ages < self.config.cold_hours)
                fresh = fresh | new if new is not None else fresh
                id_logits = id_logits.masked_fill(fresh, 0.0)
            if self.config.age:
                age_offset = self.age_bias(ages)
                offsets = offsets + age_offset
        unseen = ages < -AGE_TOLERANCE_HOURS if ages is not None else None  # not shown yet then (NaN < x is False)
        logits = text_logits + id_logits + offsets
        if unseen is not None:
            logits = logits.masked_fill(unseen, float("-inf"))
        text_only = None
        if self.config.text and self.config.text_loss:  # the text part alone must rank too: it is all a cold item has
            text_only = text_logits + age_offset
            if unseen is not None:
                text_only = text_only.masked_fill(unseen, float("-inf"))
        id_only = None
        if self.config.text and self.config.ids and self.config.id_loss:
            # the id part alone, among the items that have one: a SASRec of its own
            no_id = (ids if cands is None else ids[cands]) == UNKNOWN
            no_id = no_id.unsqueeze(0).expand(len(u), -1)
            if unseen is not None:  # fresh items keep their ids here: this loss is SASRec's, which learns them from their clicks
                no_id = no_id | unseen
            id_only = (u[:, width:] @ pool[:, width:].T / temp).masked_fill(no_id, float("-inf"))
        return logits, answer, text_only, id_only


REMOVED_VARIANTS = {"towers": "separate", "bias": False, "unknown_offset": "mean", "id_init": None}  # their kept behaviour


def _upgrade(meta: dict, state: dict[str, torch.Tensor], folder: Path) -> tuple[HybridConfig, dict[str, torch.Tensor]]:
    """The config and weights of a saved hybrid in this version's form: settings llmrec no longer has are dropped when
    the model used them as this version always does; a model that needs a removed variant cannot be read."""
    saved = dict(meta["config"])
    for name, kept in REMOVED_VARIANTS.items():
        value = saved.pop(name, kept)
        if name == "towers" and not (saved.get("text", True) and saved.get("ids", True)):
            continue  # one part only: there is no second tower either way
        if value != kept and name != "id_init":
            raise ModelError(f"the model was saved with model.hybrid.{name}: {value}, a variant llmrec no longer has",
                             where=str(folder), fix="retrain it with this version of llmrec")
    config = HybridConfig(**{k: v for k, v in saved.items() if k in HybridConfig.__dataclass_fields__})
    state = dict(state)
    if "adapter.weight" in state:
        raise ModelError("the model was saved by an earlier llmrec whose text part lived in the backbone's space",
                         where=str(folder), fix="retrain it with this version of llmrec")
    bias = state.pop("bias.weight", None)
    if bias is not None and bool(bias.abs().sum()):
        raise ModelError("the model was saved with per-item score offsets (model.hybrid.bias), which llmrec no longer has",
                         where=str(folder), fix="retrain it with this version of llmrec")
    n_rows = len(state["support"]) if "support" in state else (state["ids.weight"].shape[0] if "ids.weight" in state else 1)
    if config.text and "text_scale" not in state:  # saved before the text weight was learned
        state["text_scale"] = torch.ones(1)
    if config.text and state["text_scale"].numel() == 1:  # saved before the text weight depended on support: one weight
        state["text_scale"] = state["text_scale"].expand(SUPPORT_BUCKETS).clone()
    state.setdefault("support", torch.zeros(n_rows, dtype=torch.long))
    state.setdefault("no_id_offset", torch.zeros(1))  # saved before the new-item offset existed
    state.setdefault("blend", torch.ones(max(BLEND_GROUPS) + 1, len(PARTS)))  # saved before the blend: every part as trained
    state.setdefault("offset_scale", torch.ones(1))
    return config, state


class Hybrid(VectorRanker):
    """A trained hybrid model: text encoder (frozen, optional) + HybridNet + the item-id vocabulary."""


    def __init__(self, net: HybridNet, vocab: Sequence[str], encoder: object | None, text: TextConfig,
                 backbone: str, max_length: int, device: torch.device = torch.device("cpu")) -> None:
        self.net = net.to(device)
        self.config = net.config
        self.vocab = list(vocab)
        self.row = {item: k + 1 for k, item in enumerate(self.vocab)}  # 0 = unknown
        self.encoder = encoder  # FrozenTextEncoder, or None for an ids-only model
        self.text = text
        self.backbone = backbone
        self.max_length = max_length
        self.device = device
        self._lock = threading.RLock()
        self._item_cache: dict[str, int] = {}
        self._item_store: tuple[torch.Tensor, torch.Tensor] | None = None

    def __repr__(self) -> str:
        return f"Hybrid({asdict(self.config)}, items with ids={len(self.vocab)}, backbone={self.backbone!r})"

    # -- persistence -------------------------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        """Backbone files + the hybrid weights (prefix llmrec.hybrid.) in model.safetensors, and llmrec.json."""
        from safetensors.torch import load_file, save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        weights = folder / WEIGHTS_FILE
        state: dict[str, torch.Tensor] = {}
        if self.encoder is not None:
            self.encoder.save(folder)
            state = load_file(str(weights))
        for name, value in self.net.state_dict().items():
            state[PREFIX + name] = value.detach().to("cpu", torch.float32).contiguous()
        save_file(state, str(weights), metadata={"format": "pt", VOCAB_KEY: json.dumps(self.vocab)})
        meta = {"type": MODEL_TYPE, "config": asdict(self.config), "text": self.text.to_dict(), "max_length": self.max_length,
                "backbone": self.backbone, "text_dim": self._text_dim(), "items_with_ids": len(self.vocab)}  # text_dim: the backbone's
        write_meta(folder, meta)
        return folder

    def _text_dim(self) -> int:
        return self.encoder.dim if self.encoder is not None else 0

    @classmethod
    def load(cls, folder: str | Path, device: str = "auto") -> "Hybrid":
        from safetensors import safe_open

        from llmrec.models.text_encoder import FrozenTextEncoder

        folder = Path(folder)
        meta = read_meta(folder, expect=MODEL_TYPE)
        with safe_open(str(folder / WEIGHTS_FILE), framework="pt") as fh:
            vocab = json.loads((fh.metadata() or {}).get(VOCAB_KEY, "null") or "null")
            state = {k[len(PREFIX):]: fh.get_tensor(k) for k in fh.keys() if k.startswith(PREFIX)}
        if vocab is None or not state:
            raise ModelError("model.safetensors holds no hybrid weights", where=str(folder), fix="save the model with Hybrid.save")
        config, state = _upgrade(meta, state, folder)
        dev = pick_device(device)
        encoder = FrozenTextEncoder(folder, meta["max_length"], dev) if config.text else None
        net = HybridNet(config, meta["text_dim"], len(vocab), ease_items=state["item_item"].shape[0] - 1 if "item_item" in state else 0)
        net.load_state_dict(state, strict=True)
        net.eval()
        return cls(net, vocab, encoder, TextConfig.from_dict(meta["text"]), meta["backbone"], meta["max_length"], dev)

    fingerprint = staticmethod(_fingerprint)

    # -- items -------------------------------------------------------------------------------------------------
    def text_vectors(self, texts: Sequence[str], batch_size: int = 64, progress: bool = False,
                     remember: bool = True) -> torch.Tensor | None:
        if self.encoder is None:
            return None
        return self.encoder.encode(texts, batch_size, progress, remember=remember).to(self.device)

    def item_rows(self, item_ids: Sequence[str]) -> torch.Tensor:
        return torch.as_tensor([self.row.get(i, UNKNOWN) for i in item_ids], dtype=torch.long, device=self.device)

    def item_vectors(self, item_ids: Sequence[str], texts: Mapping[str, str], batch_size: int = 64,
                     progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(scoring vectors (n, 2*dim), biases (n,)) of items, eval mode; an id missing from `texts` is encoded as its id."""
        vectors, _, bias, _ = self._items(item_ids, texts, batch_size, progress)
        return vectors, bias

    def _items(self, item_ids: Sequence[str], texts: Mapping[str, str], batch_size: int = 64, progress: bool = False,
               remember: bool = True):
        with self._lock, torch.inference_mode():
            self.net.eval()
            text = self.text_vectors([texts.get(i, i) for i in item_ids], batch_size, progress, remember)
            return self.net.items(text, self.item_rows(item_ids))

    # -- users -------------------------------------------------------------------------------------------------
    def _recent(self, history: str | Sequence[str], texts: Mapping[str, str]) -> list[str]:
        ids = history_list(history) if isinstance(history, str) else list(history)
        usable = [i for i in ids if (i in texts if self.config.text else i in self.row)]
        return usable[-self.config.sequence_length :]

    def user_vectors(self, histories: Sequence[str | Sequence[str]], texts: Mapping[str, str], batch_size: int = 64,
                     progress: bool = False, remember: bool = True) -> torch.Tensor:
        """User vectors (len(histories), width): the encoders' states at the newest of the last `sequence_length` history
        items (oldest first; items the model cannot represent are skipped), and the EASE part of the whole history."""
        whole = [history_list(h) if isinstance(h, str) else list(h) for h in histories]
        recent = [self._recent(h, texts) for h in whole]
        ids = list(dict.fromkeys(i for h in recent for i in h)) or ["\0none"]  # one dummy row when every history is empty
        length = self.config.sequence_length
        _, inputs, _, text_parts = self._items(ids, {**texts, "\0none": ""}, batch_size, progress, remember)
        row = {item: k for k, item in enumerate(ids)}
        out = []
        with self._lock, torch.inference_mode():
            self.net.eval()
            for start in range(0, len(recent), USER_BLOCK):
                block = recent[start : start + USER_BLOCK]
                index = torch.zeros(len(block), length, dtype=torch.long)
                mask = torch.zeros(len(block), length, dtype=torch.bool)
                for u, hist in enumerate(block):
                    if hist:
                        index[u, length - len(hist):] = torch.as_tensor([row[i] for i in hist])
                        mask[u, length - len(hist):] = True
                index, mask = index.to(self.device), mask.to(self.device)
                counts = self.net.ease_counts([self.item_rows(h) for h in whole[start : start + USER_BLOCK]]) if self.net.ease_items else None
                out.append(self.net.users(inputs[index], text_parts[index] if text_parts is not None else None, mask, last=True,
                                          ease_counts=counts))
        return torch.cat(out) if out else torch.empty(0, self.net.width, device=self.device)

    # -- scoring -----------------------------------------------------------------------------------------------
    def text_scorer(self, items_df: pd.DataFrame | None = None, batch_size: int = 64):
        """(history texts, oldest first; candidate texts) -> scores: `score_texts` over the catalogue's texts,
        whose vectors are encoded now, once; a text equal to a catalogue item's is that item (ids included)."""
        catalogue = item_texts(items_df, self.text) if items_df is not None else {}
        if catalogue:
            self.item_vectors(list(catalogue), catalogue, batch_size)
        return lambda history, candidates: self.score_texts(history, candidates, catalogue, batch_size=batch_size)

    def score_texts(self, history: Sequence[str], candidates: Sequence[str], catalogue: Mapping[str, str],
                    batch_size: int = 64) -> np.ndarray:
        """Scores of candidate item *texts* for one user given by the texts of their history items (oldest first).

        `catalogue` maps item ids to their rendered texts: a text equal to a catalogue item's text is that
        item (its id part included), so an item scores the same sent as its id or as its text; any other text
        is a cold item (text part only), encoded for this call and not cached.
        """
        by_text = {text: item for item, text in catalogue.items()}
        extra = {t: f"\0text:{k}" for k, t in enumerate(dict.fromkeys(t for t in (*history, *candidates) if t not in by_text))}
        texts = {**catalogue, **{pseudo: t for t, pseudo in extra.items()}}
        as_id = lambda t: by_text.get(t) or extra[t]  # noqa: E731
        user = self.user_vectors([[as_id(t) for t in history]], texts, batch_size, remember=False)
        vectors, _, bias, _ = self._items([as_id(t) for t in candidates], texts, batch_size, remember=False)
        with torch.inference_mode():
            return ((vectors @ user[0]) / self.config.temperature + bias + self._unknown_age()).float().cpu().numpy()

    @property
    def temperature(self) -> float:
        return self.config.temperature

    def age_offsets(self, hours: torch.Tensor) -> torch.Tensor:
        return self.net.age_bias(hours)

    def _unknown_age(self) -> torch.Tensor:
        """The age offset of an item whose age the caller does not give (serving, `recommend`)."""
        return self.net.age_bias(torch.tensor([float("nan")], device=self.device))[0]

