"""LoRA adapters (peft, `train.lora`): trained instead of a backbone's top layers, merged into its weights at save,
so a saved model folder never needs peft."""

from __future__ import annotations

import logging

import torch

from llmrec.config import TrainParams
from llmrec.errors import ConfigError

log = logging.getLogger(__name__)


def add_lora(model: torch.nn.Module, params: TrainParams, keep_trainable: tuple[str, ...] = ()) -> torch.nn.Module:
    """Freeze `model` and add LoRA adapters (peft) of rank `train.lora.rank` to its attention projections.

    `keep_trainable`: names of sub-modules trained in full beside the adapters (e.g. a new scoring head).
    """
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=params.lora.rank,
        lora_alpha=params.lora.alpha,
        lora_dropout=params.lora.dropout,
        target_modules=params.lora.targets or None,  # None: peft's default for the architecture (query, value for BERT)
        modules_to_save=list(keep_trainable) or None,
    )
    try:
        wrapped = get_peft_model(model, config)
    except ValueError as exc:
        raise ConfigError(
            f"cannot add LoRA adapters to this backbone: {exc}",
            where="train.lora.targets",
            fix="name the backbone's linear layers to adapt, e.g. [query, value] for BERT-like models",
        ) from exc
    trainable = sum(p.numel() for p in wrapped.parameters() if p.requires_grad)
    total = sum(p.numel() for p in wrapped.parameters())
    log.info("LoRA rank %d: training %d of %d parameters (%.2f%%)", params.lora.rank, trainable, total, 100 * trainable / total)
    return wrapped


def merge_lora(model: torch.nn.Module) -> torch.nn.Module:
    """The plain model with the adapters merged into its weights (saved folders never need peft)."""
    return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model
