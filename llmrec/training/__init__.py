"""Training: the layer between models and evaluation (docs/architecture.md).

- loop.py: the training loop every model type shares (optimizer, schedule, precision, DDP, validation)
- checkpoint.py: checkpoints and exact resume
- lora.py: LoRA adapters (train.lora), merged at save
- distributed.py: processes started by torchrun / accelerate launch
- common.py: what the trainers share besides the loop (TrainResult, train_result, freeze_lower_layers, token_lengths)
- cross_encoder.py: listwise fine-tuning of the cross-encoder
- two_tower.py: fine-tuning the two-tower model
- hybrid.py: training the hybrid
- blend.py: choosing how the hybrid's parts are blended, on held-out consumptions
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from llmrec.model_types import MODEL_TYPES


def train(model_type: str, data: Any, model_params: Any, train_params: Any, out: str | Path,
          on_step: Callable[[int, float], None] | None = None, progress: bool = True) -> Any:
    """Train a model of `model_type` on `data` and save it to `out`: the TrainResult of its trainer."""
    trainer = MODEL_TYPES[model_type].load_trainer()  # the type's row of llmrec.model_types
    return trainer(data, model_params, train_params, out, on_step=on_step, progress=progress)
