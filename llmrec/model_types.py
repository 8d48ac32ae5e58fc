"""The model types llmrec trains and serves, in one table: for each type name (`model.type`, the "type" of a saved
folder's llmrec.json), the class of its saved folder, its trainer, the section of `model` holding its own settings,
and what its trainer reads. A new type is one class, one trainer and one row here; nothing else in llmrec switches
on a type name (tests/unit/test_layers.py). Strings only, imported when used, so any layer may read the table."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ModelType:
    name: str
    model_class: str       # "module:Class": load, save, scorer, text_scorer, catalogue_scorer, ranks_catalogue
    trainer: str           # "module:function" taking (train, model_params, train_params, out, on_step=, progress=)
    settings: str          # its section of `model` in params.yaml (model.<settings>)
    whole_histories: bool  # its trainer reads each user's whole sequence, so train.max_train_impressions does not cut it

    def load_class(self) -> Any:
        return _resolve(self.model_class)

    def load_trainer(self) -> Any:
        return _resolve(self.trainer)


def _resolve(path: str) -> Any:
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


MODEL_TYPES = {t.name: t for t in (
    ModelType("cross-encoder", "llmrec.models.cross_encoder:CrossEncoder", "llmrec.training.cross_encoder:train_cross_encoder",
              "cross_encoder", whole_histories=False),
    ModelType("two-tower", "llmrec.models.two_tower:TwoTower", "llmrec.training.two_tower:train_two_tower",
              "two_tower", whole_histories=False),
    ModelType("hybrid", "llmrec.models.hybrid:Hybrid", "llmrec.training.hybrid:train_hybrid",
              "hybrid", whole_histories=True),
)}
