"""The training loop every model type shares (cross-encoder, two-tower, hybrid).

A model type describes one training step as a `LoopTask` (the module to train, its optimizer
groups, and a loss over a micro-batch of example indices); `run_loop` does everything else, as named steps
over one `LoopState` (open or resume, train a step, validate, checkpoint, close):

- AdamW with linear warm-up and decay, gradient clipping at 1.0;
- gradient accumulation: `train.grad_accum_steps` micro-batches of `train.batch_size` examples per
  optimizer step (per process), with the loss scaled so the step equals one big batch;
- precision (`train.precision`): `auto` is bf16 autocast on a CUDA GPU that supports it, fp16 with a
  gradient scaler on older GPUs, fp32 elsewhere (autocast on a CPU is ~5x slower, so never by default);
- length-grouped batches (`model.cross_encoder.group_by_length`): within windows of 50 batches, examples are sorted
  by length before being cut into batches, so each batch pads little; batch order stays random;
- data parallel across processes started by torchrun / accelerate launch (`llmrec.training.distributed`):
  every process takes its own share of each global batch and DDP averages the gradients;
- checkpoints every `train.checkpoint_every` steps and exact resume (weights, optimizer, scheduler,
  gradient scaler, data order and cursor, every RNG), written atomically by the main process;
- a validation nDCG@10 curve every `train.eval_every` steps with early stopping and best weights;
- a time limit (`train.max_minutes`): training stops after the step that crosses it and keeps the model;
- a progress bar (main process only) with the loss and throughput.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from llmrec.config import TrainParams
from llmrec.data.contract import Dataset
from llmrec.errors import ConfigError, DataError, ModelError
from llmrec.training.checkpoint import (
    CHECKPOINT_WEIGHTS,
    find_checkpoint,
    load_trainer_state,
    rng_states,
    save_checkpoint,
    set_rng_states,
)
from llmrec.training.distributed import Distributed

log = logging.getLogger(__name__)

LENGTH_GROUP_WINDOW = 50        # batches sorted together by length (as in transformers' LengthGroupedSampler)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    np.random.seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def linear_schedule(optimizer: torch.optim.Optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# -- precision -----------------------------------------------------------------------------------------------------
def resolve_precision(precision: str, device: torch.device) -> str:
    """fp32 | bf16 | fp16 for `train.precision` on this device (see the module docstring)."""
    if precision == "auto":
        if device.type != "cuda":
            return "fp32"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("train.precision fp16 needs a CUDA GPU", where="train.precision", fix="use auto, fp32 or bf16")
    if precision == "bf16" and device.type == "cpu":
        log.warning("bf16 autocast on a CPU is usually several times slower than fp32 (train.precision: auto uses fp32)")
    return precision


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


# -- batches -------------------------------------------------------------------------------------------------------
def epoch_order(rng: np.random.Generator, n: int, batch: int, lengths: np.ndarray | None) -> np.ndarray:
    """A random order of n examples; with `lengths`, consecutive runs of `batch` examples have similar lengths."""
    order = rng.permutation(n)
    if lengths is None or n <= batch:
        return order
    window = batch * LENGTH_GROUP_WINDOW
    grouped = [chunk[np.argsort(-lengths[chunk], kind="stable")] for chunk in np.array_split(order, range(window, n, window))]
    order = np.concatenate(grouped)
    starts = np.arange(0, n, batch)
    return np.concatenate([order[s : s + batch] for s in rng.permutation(starts)])


# -- validation ----------------------------------------------------------------------------------------------------
VALIDATION_SHARE = 0.1      # train.eval_every: the most recent 10% of training impressions are held out ...
VALIDATION_MAX = 200        # ... at most this many of them (a small slice: it is scored every eval_every steps)


def split_validation(train: Dataset) -> tuple[Dataset, Dataset]:
    """(training part, validation part): the validation part is the most recent VALIDATION_SHARE of the
    impressions by time (at most VALIDATION_MAX, at least 1); both keep the whole item table."""
    imps = train.impressions.sort_values("timestamp", kind="stable")
    if len(imps) < 2:
        raise DataError("too few training impressions to hold out a validation slice", fix="set train.eval_every: 0")
    n = min(VALIDATION_MAX, max(1, int(len(imps) * VALIDATION_SHARE)))
    held = set(imps["impression_id"].iloc[-n:])

    def part(keep: bool) -> Dataset:
        return replace(
            train,
            impressions=train.impressions[train.impressions["impression_id"].isin(held) == keep],
            interactions=train.interactions[train.interactions["impression_id"].isin(held) == keep],
        )

    return part(False), part(True)


def validation_ndcg(scorer: Callable[[pd.DataFrame], np.ndarray], frame: pd.DataFrame) -> float:
    """Mean nDCG@10 of a scorer on a candidate frame (impressions without a click and a non-click are skipped)."""
    from llmrec.metrics import impression_metrics

    metrics = impression_metrics(frame.assign(score=scorer(frame)), [10])
    return float(metrics["ndcg@10"].mean()) if len(metrics) else float("nan")


# -- LoRA ----------------------------------------------------------------------------------------------------------
# -- the loop ------------------------------------------------------------------------------------------------------
COMPLETED, EARLY_STOPPING, TIME_LIMIT = "completed", "early stopping", "time limit"  # why training ended


@dataclass
class LoopTask:
    """One model type's training step, as `run_loop` needs it."""

    module: torch.nn.Module                                   # what is trained (and wrapped in DDP); its state is checkpointed
    param_groups: list[dict]                                  # AdamW groups: {"params": [...], "lr": ...}
    n_examples: int
    loss: Callable[[torch.nn.Module, np.ndarray], torch.Tensor]   # (module to call, example indices) -> mean loss
    digest: str                                               # checkpoint_digest of params + examples
    lengths: np.ndarray | None = None                         # per-example length, for length-grouped batches
    validate: Callable[[], float] | None = None               # validation metric, higher = better (called in eval mode, no grad)
    metric: str = "ndcg@10"                                   # what `validate` measures: its key in the curve and the log
    after_update: Callable[[], None] = lambda: None           # after each optimizer step (e.g. drop cached vectors)
    pairs_per_example: int = 1                                # scored (user, item) pairs per example, for pairs/s
    find_unused_parameters: bool = False                      # DDP: some parameters may get no gradient in a step
    desc: str = "training"


@dataclass
class LoopResult:
    losses: list[float]
    seconds: float
    examples_per_second: float
    pairs_per_second: float
    validation: list[dict] = field(default_factory=list)
    best_step: int | None = None
    world_size: int = 1
    effective_batch: int = 0
    precision: str = "fp32"
    planned_steps: int = 0                                    # the steps of max_steps / max_epochs
    stopped: str = COMPLETED                                  # why training ended: COMPLETED, EARLY_STOPPING or TIME_LIMIT
    examples: int = 0                                         # training examples (an epoch)



RISING_VALIDATIONS = 2  # the best validation among the last this many: the curve has not levelled off


def under_trained(result: LoopResult) -> tuple[bool, str]:
    """(whether the time limit stopped training before it was done, a sentence saying how it ended). Done means the
    planned steps ran, early stopping fired, or the validation curve had levelled off (its best more than
    RISING_VALIDATIONS validations before the end); without validation a time stop always counts as under-trained."""
    steps = len(result.losses)
    if result.stopped == EARLY_STOPPING:
        return False, f"stopped early at step {steps:,} of {result.planned_steps:,} (validation best at step {result.best_step:,})"
    if result.stopped != TIME_LIMIT:
        recent = [r["step"] for r in result.validation[-RISING_VALIDATIONS:]]
        if result.validation and result.best_step in recent and len(result.validation) > RISING_VALIDATIONS:
            # the planned length ran out, not the clock: a budget choice, so a hint rather than a flag
            return False, (f"completed {steps:,} steps with validation still rising (best at step {result.best_step:,}): "
                           "a longer training (train.max_epochs, train.max_steps) may rank better")
        return False, f"completed {steps:,} steps"
    where = f"stopped by time at step {steps:,} of {result.planned_steps:,}"
    if not result.validation:
        return True, f"under-trained: {where}, without validation to say whether it had levelled off"
    recent = [r["step"] for r in result.validation[-RISING_VALIDATIONS:]]
    if result.best_step in recent:
        return True, f"under-trained: {where}, validation still rising (best at step {result.best_step:,})"
    return False, f"{where}; validation had levelled off (best at step {result.best_step:,})"


def _micro_batches(params: TrainParams, dist: Distributed, task: LoopTask, rng: np.random.Generator,
                   order: np.ndarray, cursor: int) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
    """Yield (this process's example indices, the order, the cursor after them) for one optimizer step."""
    size = params.batch_size * dist.world_size
    if size > task.n_examples:
        raise DataError(
            f"a global batch of {size} examples (train.batch_size {params.batch_size} x {dist.world_size} processes) "
            f"is larger than the {task.n_examples} training examples",
            fix="lower train.batch_size or train on more data",
        )
    for _ in range(params.grad_accum_steps):
        if cursor + size > len(order):
            order, cursor = epoch_order(rng, task.n_examples, size, task.lengths), 0
        yield dist.shard(order[cursor : cursor + size]), order, cursor + size
        cursor += size


@dataclass
class LoopState:
    """What a training run carries from one optimizer step to the next; a checkpoint is this state on disk."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    rng: np.random.Generator           # the data order's
    order: np.ndarray                  # this epoch's example order
    planned_steps: int
    eval_every: int                    # optimizer steps between validations (0 = none)
    step: int = 0                      # optimizer steps done
    cursor: int = 0                    # position in `order`
    losses: list[float] = field(default_factory=list)
    seen: int = 0                      # examples trained on, all processes
    curve: list[dict] = field(default_factory=list)
    best: float = -math.inf
    best_step: int | None = None
    best_state: dict | None = None     # the best validation's weights (CPU)
    bad_evals: int = 0                 # validations since the best
    stopped: str = COMPLETED

    def checkpoint(self, rngs: list[dict]) -> dict:
        return {"step": self.step, "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(), "data_rng": self.rng.bit_generator.state,
                "order": torch.from_numpy(np.asarray(self.order, dtype=np.int64)), "cursor": self.cursor,
                "losses": self.losses, "seen": self.seen, "rng": rngs, "validation": self.curve, "best": self.best,
                "best_step": self.best_step, "best_state": self.best_state, "bad_evals": self.bad_evals}

    def restore(self, saved: dict, rank: int) -> None:
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        self.scaler.load_state_dict(saved["scaler"])
        self.rng.bit_generator.state = saved["data_rng"]
        self.order, self.cursor, self.step = saved["order"].numpy(), int(saved["cursor"]), int(saved["step"])
        self.losses, self.seen = list(saved["losses"]), int(saved["seen"])
        rngs = saved["rng"]
        set_rng_states(rngs[rank] if rank < len(rngs) else rngs[0])
        self.curve, self.best, self.bad_evals = list(saved["validation"]), float(saved["best"]), int(saved["bad_evals"])
        self.best_step, self.best_state = saved["best_step"], saved["best_state"]


def _planned_steps(task: LoopTask, params: TrainParams, dist: Distributed) -> int:
    """train.max_steps, or fewer when train.max_epochs passes over the examples take fewer."""
    steps = params.max_steps
    if params.max_epochs:
        per_step = params.batch_size * params.grad_accum_steps * dist.world_size
        steps = min(steps, max(1, math.ceil(params.max_epochs * task.n_examples / per_step)))
        if steps < params.max_steps and dist.is_main:
            log.info("%s: %d steps (train.max_epochs %g of %d examples), not %d", task.desc, steps, params.max_epochs,
                     task.n_examples, params.max_steps)
    return steps


def _open(task: LoopTask, params: TrainParams, dist: Distributed, device: torch.device, precision: str) -> LoopState:
    """A fresh state: AdamW, the warm-up/decay schedule, the gradient scaler and the first epoch's order."""
    steps = _planned_steps(task, params, dist)
    optimizer = torch.optim.AdamW(task.param_groups, lr=params.lr, weight_decay=params.weight_decay)
    scheduler = linear_schedule(optimizer, int(steps * params.warmup_ratio), steps)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    rng = np.random.default_rng(params.seed)
    order = epoch_order(rng, task.n_examples, params.batch_size * dist.world_size, task.lengths)
    eval_every = params.eval_every
    if params.eval_every_epochs:
        eval_every = max(1, round(params.eval_every_epochs * task.n_examples / (params.batch_size * params.grad_accum_steps * dist.world_size)))
    return LoopState(optimizer, scheduler, scaler, rng, order, steps, eval_every)


def _resume(state: LoopState, task: LoopTask, params: TrainParams, out: str | Path, device: torch.device, dist: Distributed) -> None:
    """Continue from <out>/checkpoint/ when it was written for the same task (train.resume)."""
    resume_from = find_checkpoint(out, task.digest, params.resume) if params.checkpoint_every else None
    if resume_from is None:
        return
    from safetensors.torch import load_model

    saved = load_trainer_state(resume_from)
    load_model(task.module, str(resume_from / CHECKPOINT_WEIGHTS), strict=True, device=str(device))
    state.restore(saved, dist.rank)
    task.after_update()
    if dist.is_main:
        log.info("resuming from step %d (checkpoint %s)", state.step, resume_from)


def _train_step(state: LoopState, module: torch.nn.Module, task: LoopTask, params: TrainParams, dist: Distributed,
                precision: str, device: torch.device, trainable: list[torch.Tensor]) -> float:
    """One optimizer step over grad_accum_steps micro-batches; the loss averaged over processes."""
    total = 0.0
    micro = list(_micro_batches(params, dist, task, state.rng, state.order, state.cursor))
    for k, (idx, state.order, state.cursor) in enumerate(micro):
        last = k == len(micro) - 1
        sync = contextlib.nullcontext() if last or not dist.enabled else module.no_sync()
        with sync:
            with autocast(precision, device):
                loss = task.loss(module, idx)
            state.scaler.scale(loss.float() / len(micro)).backward()
        total += loss.item() / len(micro)
        state.seen += len(idx) * dist.world_size
    loss_value = dist.mean(total)
    if not math.isfinite(loss_value):
        raise ModelError(f"training diverged at step {state.step + 1} (loss is not finite)", fix="lower train.lr")
    state.scaler.unscale_(state.optimizer)
    torch.nn.utils.clip_grad_norm_(trainable, 1.0)
    state.scaler.step(state.optimizer)
    state.scaler.update()
    state.scheduler.step()
    state.optimizer.zero_grad(set_to_none=True)
    task.after_update()
    state.losses.append(loss_value)
    state.step += 1
    return loss_value


def _validate(state: LoopState, module: torch.nn.Module, task: LoopTask, params: TrainParams, dist: Distributed) -> bool:
    """Validate, keep the best weights; whether early stopping says stop."""
    module.eval()
    with torch.no_grad():
        value = dist.broadcast(task.validate() if dist.is_main else None)
    module.train()
    state.curve.append({"step": state.step, task.metric: value})
    if value > state.best:
        state.best, state.best_step, state.bad_evals = value, state.step, 0
        state.best_state = {k: v.detach().to("cpu", copy=True) for k, v in task.module.state_dict().items()}
    else:
        state.bad_evals += 1
    if dist.is_main:
        log.info("step %d: validation %s %.4f (best %.4f)", state.step, task.metric, value, state.best)
    if params.early_stopping_patience and state.bad_evals >= params.early_stopping_patience:
        if dist.is_main:
            log.info("early stopping at step %d: no improvement in %d validations", state.step, state.bad_evals)
        state.stopped = EARLY_STOPPING
        return True
    return False


def _close(state: LoopState, module: torch.nn.Module, task: LoopTask, params: TrainParams, dist: Distributed, precision: str,
           seconds: float, seen_before: int) -> LoopResult:
    """Eval mode, the best validation's weights, and what happened."""
    if not state.losses or not math.isfinite(float(np.mean(state.losses[-20:]))):
        raise ModelError("training diverged (loss is not finite)", fix="lower train.lr")
    module.eval()
    if state.best_state is not None:  # eval_every: the weights of the best validation, not the last step's
        task.module.load_state_dict(state.best_state)
        task.after_update()
        if dist.is_main:
            log.info("keeping the weights of step %d (validation %s %.4f)", state.best_step, task.metric, state.best)
    per_second = (state.seen - seen_before) / max(seconds, 1e-9)
    return LoopResult(
        losses=state.losses, seconds=seconds, examples_per_second=per_second, pairs_per_second=per_second * task.pairs_per_example,
        validation=state.curve, best_step=state.best_step, world_size=dist.world_size,
        effective_batch=params.batch_size * params.grad_accum_steps * dist.world_size, precision=precision,
        planned_steps=state.planned_steps, stopped=state.stopped, examples=task.n_examples,
    )


def run_loop(
    task: LoopTask,
    params: TrainParams,
    out: str | Path,
    device: torch.device,
    dist: Distributed | None = None,
    on_step: Callable[[int, float], None] | None = None,
    progress: bool = True,
) -> LoopResult:
    """Train `task.module` for the planned optimizer steps (see the module docstring): open or resume the state, then
    per step train, validate, stop on time, checkpoint; close with the best weights."""
    dist = dist or Distributed()
    precision = resolve_precision(params.precision, device)
    torch.manual_seed(params.seed + dist.rank)  # dropout differs between processes; the model was built before
    module = dist.wrap(task.module, task.find_unused_parameters)
    trainable = [p for group in task.param_groups for p in group["params"]]
    state = _open(task, params, dist, device, precision)
    _resume(state, task, params, out, device, dist)
    seen_before = state.seen
    module.train()
    started = time.perf_counter()
    bar = tqdm(range(state.step, state.planned_steps), desc=task.desc, unit="step", disable=not (progress and dist.is_main),
               initial=state.step, total=state.planned_steps)
    for _ in bar:
        _train_step(state, module, task, params, dist, precision, device, trainable)
        rate = (state.seen - seen_before) / max(time.perf_counter() - started, 1e-9)
        bar.set_postfix(loss=f"{np.mean(state.losses[-20:]):.3f}", ex_s=f"{rate:.1f}", refresh=False)  # refresh: tqdm's own pace (TQDM_MININTERVAL)
        step, stop = state.step, False
        out_of_time = bool(params.max_minutes) and dist.broadcast(time.perf_counter() - started > 60 * params.max_minutes)
        if task.validate is not None and state.eval_every and (step % state.eval_every == 0 or step == state.planned_steps or out_of_time):
            stop = _validate(state, module, task, params, dist)
        if out_of_time and not stop:  # validated above, so the steps since the last validation are not lost
            if dist.is_main:
                log.info("time limit: stopping after step %d of %d (train.max_minutes %g)", step, state.planned_steps, params.max_minutes)
            stop, state.stopped = True, TIME_LIMIT
        if params.checkpoint_every and step % params.checkpoint_every == 0 and step < state.planned_steps and not stop:
            rngs = dist.gather(rng_states())
            if dist.is_main:
                save_checkpoint(out, step, task.digest, task.module, state.checkpoint(rngs))
            dist.barrier()
        if on_step is not None:
            on_step(step - 1, state.losses[-1])
        if stop:
            break
    return _close(state, module, task, params, dist, precision, time.perf_counter() - started, seen_before)
