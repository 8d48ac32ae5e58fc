"""What every trainer shares besides the loop: its opening (`start_training`: seeds, this process's device) and
closing (`save_trained`: the main process saves), the result a training run returns (`TrainResult`, built from the
loop's by `train_result`), freezing a backbone's lower layers, and the token lengths behind length-grouped batches."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from llmrec.config import TrainParams
from llmrec.models.io import pick_device
from llmrec.training.checkpoint import remove_checkpoint
from llmrec.training.distributed import Distributed
from llmrec.training.loop import LoopResult, seed_everything, under_trained

log = logging.getLogger(__name__)


def start_training(train_params: TrainParams) -> tuple[Distributed, torch.device]:
    """Seed every RNG; this process's place among the processes (torchrun / accelerate launch) and its device."""
    seed_everything(train_params.seed)
    dist = Distributed.from_env(pick_device(train_params.device))
    return dist, dist.device_for(pick_device(train_params.device))


def save_trained(model: object, out: str | Path, dist: Distributed) -> None:
    """The main process saves the trained model and removes the checkpoint (the run is complete); the others wait."""
    if dist.is_main:
        model.save(out)  # type: ignore[attr-defined]
        remove_checkpoint(out)
    dist.barrier()


@dataclass
class TrainResult:
    model_dir: str
    steps: int
    examples: int
    seconds: float
    pairs_per_second: float
    final_loss: float
    losses: list[float] = field(default_factory=list)
    device: str = "cpu"
    validation: list[dict] = field(default_factory=list)  # [{"step", "ndcg@10"}] when train.eval_every > 0 (hybrid: "ndcg_full")
    world_size: int = 1          # processes that trained together (torchrun / accelerate launch)
    effective_batch: int = 0     # examples per optimizer step: batch_size x grad_accum_steps x world_size
    precision: str = "fp32"
    planned_steps: int = 0       # the steps max_steps / max_epochs allowed
    stopped: str = "completed"   # completed | early stopping | time limit
    best_step: int | None = None  # with validation: the step whose weights were kept
    under_trained: bool = False  # the time limit stopped it before validation levelled off (see loop.under_trained)
    note: str = ""               # how training ended, in a sentence

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def epochs(self) -> float:
        """Passes over the training examples made."""
        return self.steps * self.effective_batch / self.examples if self.examples and self.effective_batch else 0.0

    def length(self) -> str:
        """How long it trained and why it stopped, e.g. '43 epochs (2,064 steps), early stopping, best at epoch 23'."""
        per_epoch = self.examples / self.effective_batch if self.examples and self.effective_batch else 0.0
        text = f"{self.epochs:.0f} epochs ({self.steps:,} steps)" if per_epoch else f"{self.steps:,} steps"
        text += f", {self.stopped}"
        if self.best_step is not None:
            text += f", best at epoch {self.best_step / per_epoch:.0f}" if per_epoch else f", best at step {self.best_step:,}"
        return text


def freeze_lower_layers(model: torch.nn.Module, trainable_layers: int) -> None:
    """Train only the top `trainable_layers` transformer layers and the head (0 = train everything).

    Fine-tuning the top layers of a pretrained news encoder is about as good as fine-tuning all
    of them (PLM-NR, Wu et al. 2021) and makes each step much cheaper on CPU.
    """
    if trainable_layers <= 0:
        return
    base = getattr(model, "base_model", model)
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    if layers is None:
        log.warning("cannot find encoder layers in %s; training all of it", type(model).__name__)
        return
    for p in base.embeddings.parameters():
        p.requires_grad_(False)
    for layer in list(layers)[: max(0, len(layers) - trainable_layers)]:
        for p in layer.parameters():
            p.requires_grad_(False)


def token_lengths(tokenizer: object, texts: list[str]) -> dict[str, int]:
    """Tokens of each distinct text (special tokens included), for length-grouped batches."""
    unique = list(dict.fromkeys(texts))
    ids = tokenizer(unique, add_special_tokens=False, truncation=False)["input_ids"] if unique else []
    return {t: len(i) for t, i in zip(unique, ids)}


def train_result(out: str | Path, loop: LoopResult, examples: int, device: torch.device) -> TrainResult:
    short, note = under_trained(loop)
    if short or "still rising" in note:
        log.warning("%s: %s", out, note)
    return TrainResult(
        model_dir=str(out),
        steps=len(loop.losses),
        examples=examples,
        seconds=round(loop.seconds, 2),
        pairs_per_second=round(loop.pairs_per_second, 2),
        final_loss=float(np.mean(loop.losses[-20:])),
        losses=loop.losses,
        device=str(device),
        validation=loop.validation,
        world_size=loop.world_size,
        effective_batch=loop.effective_batch,
        precision=loop.precision,
        planned_steps=loop.planned_steps,
        stopped=loop.stopped,
        best_step=loop.best_step,
        under_trained=short,
        note=note,
    )
