"""Training: the layer between models and evaluation (docs/architecture.md).

- loop.py: the training loop every model type shares (optimizer, schedule, precision, DDP, checkpoints, validation)
- distributed.py: processes started by torchrun / accelerate launch
- common.py: what the trainers share besides the loop (TrainResult, train_result, freeze_lower_layers, token_lengths)
- cross_encoder.py: listwise fine-tuning of the cross-encoder
- two_tower.py: fine-tuning the two-tower model
- hybrid.py: training the hybrid
- blend.py: choosing how the hybrid's parts are blended, on held-out consumptions
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple


class Trainer(NamedTuple):
    function: str  # "module:function" taking (train, model_params, train_params, out, on_step=, progress=)
    whole_histories: bool  # it reads each user's whole sequence, so train.max_train_impressions does not cut it


TRAINERS = {  # model.type -> its trainer (the saved folder's class is in llmrec.models.ranker.MODEL_CLASSES)
    "cross-encoder": Trainer("llmrec.training.cross_encoder:train_cross_encoder", whole_histories=False),
    "two-tower": Trainer("llmrec.training.two_tower:train_two_tower", whole_histories=False),
    "hybrid": Trainer("llmrec.training.hybrid:train_hybrid", whole_histories=True),
}


def train(model_type: str, data: Any, model_params: Any, train_params: Any, out: str | Path,
          on_step: Callable[[int, float], None] | None = None, progress: bool = True) -> Any:
    """Train a model of `model_type` on `data` and save it to `out`: the TrainResult of its trainer."""
    module, name = TRAINERS[model_type].function.split(":")
    return getattr(importlib.import_module(module), name)(data, model_params, train_params, out, on_step=on_step, progress=progress)
