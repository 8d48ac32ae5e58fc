"""The training loop every model type shares (cross-encoder, two-tower).

A model type describes one training step as a `LoopTask` (the module to train, its optimizer
groups, and a loss over a micro-batch of example indices); `run_loop` does everything else:

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

Why one module this long: the loop's steps (batches, accumulation, precision, validation, early stopping,
checkpoints, the time cap) read and write one training state; apart, each would need all of it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from llmrec.config import ModelParams, TrainParams
from llmrec.data.contract import Dataset
from llmrec.errors import ConfigError, DataError, ModelError
from llmrec.training.distributed import Distributed

log = logging.getLogger(__name__)

LENGTH_GROUP_WINDOW = 50        # batches sorted together by length (as in transformers' LengthGroupedSampler)
CHECKPOINT_DIR = "checkpoint"   # <out>/checkpoint/: the files below
CHECKPOINT_META = "checkpoint.json"   # {"step": N, "digest": ...}: read first, to decide whether to resume
CHECKPOINT_WEIGHTS = "weights.safetensors"   # the trained module's state (LoRA adapters and user tower included)
TRAINER_STATE = "trainer_state.pt"    # optimizer, scheduler, scaler, RNG states, data order/cursor, losses
# Params that never change what training computes: a checkpoint written under other values still applies.
_NOT_HASHED = {"checkpoint_every", "resume", "out", "device", "max_minutes"}


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


# -- checkpoints ---------------------------------------------------------------------------------------------------
def checkpoint_digest(model_params: ModelParams, train_params: TrainParams, data: pd.DataFrame, **extra: object) -> str:
    """sha256 (16 hex) of everything that shapes the training trajectory: model and train params (but
    not checkpoint_every/resume/out/device), the training examples and `extra` (e.g. the model type)."""
    train = {k: v for k, v in train_params.model_dump().items() if k not in _NOT_HASHED}
    h = hashlib.sha256(json.dumps({"model": model_params.model_dump(), "train": train, "extra": extra}, sort_keys=True, default=str).encode())
    h.update(data.to_json(orient="values", default_handler=str).encode())
    return h.hexdigest()[:16]


def rng_states() -> dict:
    """The global RNG states (torch, numpy's legacy global, python `random`) as tensors and plain types."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)],
        "python": random.getstate(),
    }


def set_rng_states(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))


def save_checkpoint(out: str | Path, step: int, digest: str, module: torch.nn.Module, state: dict) -> Path:
    """Write <out>/checkpoint/ atomically: into a temporary sibling folder, then renamed into place
    (the previous checkpoint is renamed aside first and removed last, so one complete checkpoint
    exists at every moment; `find_checkpoint` also accepts the aside copy)."""
    from safetensors.torch import save_model

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    final, aside = out / CHECKPOINT_DIR, out / f"{CHECKPOINT_DIR}.old"
    tmp = out / f"{CHECKPOINT_DIR}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_model(module, str(tmp / CHECKPOINT_WEIGHTS))
    torch.save(state, tmp / TRAINER_STATE)
    (tmp / CHECKPOINT_META).write_text(json.dumps({"step": step, "digest": digest}))
    if final.exists():
        shutil.rmtree(aside, ignore_errors=True)
        final.rename(aside)
    tmp.rename(final)
    shutil.rmtree(aside, ignore_errors=True)
    log.debug("checkpoint at step %d written to %s", step, final)
    return final


def find_checkpoint(out: str | Path, digest: str, resume: bool) -> Path | None:
    """The checkpoint folder to resume from, or None (no checkpoint, resume off, or other params/data: logged)."""
    out = Path(out)
    for folder in (out / CHECKPOINT_DIR, out / f"{CHECKPOINT_DIR}.old"):
        meta_path = folder / CHECKPOINT_META
        if not meta_path.is_file():
            continue
        if not resume:
            log.info("ignoring the checkpoint in %s (train.resume is off): starting fresh", folder)
            return None
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError) as exc:
            log.warning("ignoring an unreadable checkpoint in %s (%s): starting fresh", folder, exc)
            return None
        if meta.get("digest") != digest:
            log.warning("ignoring the checkpoint in %s: it was written with other params or data; starting fresh", folder)
            return None
        if not (folder / CHECKPOINT_WEIGHTS).is_file():
            log.warning("ignoring the checkpoint in %s: it has no %s (older format); starting fresh", folder, CHECKPOINT_WEIGHTS)
            return None
        return folder
    return None


def load_trainer_state(folder: Path) -> dict:
    """The trainer state of a checkpoint. `torch.load` unpickles, which is why it runs with
    `weights_only=True` (tensors, dicts, lists and plain numbers/strings only, no arbitrary objects);
    and it only ever reads our own file, written by `save_checkpoint` into our own output folder."""
    return torch.load(folder / TRAINER_STATE, map_location="cpu", weights_only=True)


def remove_checkpoint(out: str | Path) -> None:
    out = Path(out)
    for folder in (out / CHECKPOINT_DIR, out / f"{CHECKPOINT_DIR}.old", *out.glob(f"{CHECKPOINT_DIR}.tmp-*")):
        shutil.rmtree(folder, ignore_errors=True)


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


def run_loop(
    task: LoopTask,
    params: TrainParams,
    out: str | Path,
    device: torch.device,
    dist: Distributed | None = None,
    on_step: Callable[[int, float], None] | None = None,
    progress: bool = True,
) -> LoopResult:
    """Train `task.module` for `params.max_steps` optimizer steps (see the module docstring)."""
    dist = dist or Distributed()
    precision = resolve_precision(params.precision, device)
    torch.manual_seed(params.seed + dist.rank)  # dropout differs between processes; the model was built before
    module = dist.wrap(task.module, task.find_unused_parameters)
    trainable = [p for group in task.param_groups for p in group["params"]]
    optimizer = torch.optim.AdamW(task.param_groups, lr=params.lr, weight_decay=params.weight_decay)
    steps = params.max_steps
    if params.max_epochs:
        per_step = params.batch_size * params.grad_accum_steps * dist.world_size
        steps = min(steps, max(1, math.ceil(params.max_epochs * task.n_examples / per_step)))
        if steps < params.max_steps and dist.is_main:
            log.info("%s: %d steps (train.max_epochs %g of %d examples), not %d", task.desc, steps, params.max_epochs,
                     task.n_examples, params.max_steps)
    scheduler = linear_schedule(optimizer, int(steps * params.warmup_ratio), steps)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    rng = np.random.default_rng(params.seed)
    order = epoch_order(rng, task.n_examples, params.batch_size * dist.world_size, task.lengths)
    cursor, first, losses, seen = 0, 0, [], 0
    curve, best, best_step, best_state, bad_evals = [], -math.inf, None, None, 0
    stopped = COMPLETED
    eval_every = params.eval_every
    if params.eval_every_epochs:
        eval_every = max(1, round(params.eval_every_epochs * task.n_examples / (params.batch_size * params.grad_accum_steps * dist.world_size)))
    resume_from = find_checkpoint(out, task.digest, params.resume) if params.checkpoint_every else None
    if resume_from is not None:
        from safetensors.torch import load_model

        state = load_trainer_state(resume_from)
        load_model(task.module, str(resume_from / CHECKPOINT_WEIGHTS), strict=True, device=str(device))
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        rng.bit_generator.state = state["data_rng"]
        order, cursor, first = state["order"].numpy(), int(state["cursor"]), int(state["step"])
        losses, seen = list(state["losses"]), int(state["seen"])
        rngs = state["rng"]
        set_rng_states(rngs[dist.rank] if dist.rank < len(rngs) else rngs[0])
        curve, best, bad_evals = list(state["validation"]), float(state["best"]), int(state["bad_evals"])
        best_step, best_state = state["best_step"], state["best_state"]
        task.after_update()
        if dist.is_main:
            log.info("resuming from step %d (checkpoint %s)", first, resume_from)
    seen_before = seen
    module.train()
    started = time.perf_counter()
    bar = tqdm(range(first, steps), desc=task.desc, unit="step", disable=not (progress and dist.is_main), initial=first, total=steps)
    for step in bar:
        total = 0.0
        micro = list(_micro_batches(params, dist, task, rng, order, cursor))
        for k, (idx, order, cursor) in enumerate(micro):
            last = k == len(micro) - 1
            sync = contextlib.nullcontext() if last or not dist.enabled else module.no_sync()
            with sync:
                with autocast(precision, device):
                    loss = task.loss(module, idx)
                scaler.scale(loss.float() / len(micro)).backward()
            total += loss.item() / len(micro)
            seen += len(idx) * dist.world_size
        loss_value = dist.mean(total)
        if not math.isfinite(loss_value):
            raise ModelError(f"training diverged at step {step + 1} (loss is not finite)", fix="lower train.lr")
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        task.after_update()
        losses.append(loss_value)
        rate = (seen - seen_before) / max(time.perf_counter() - started, 1e-9)
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}", ex_s=f"{rate:.1f}", refresh=False)  # refresh: tqdm's own pace (TQDM_MININTERVAL)
        stop = False
        out_of_time = bool(params.max_minutes) and dist.broadcast(time.perf_counter() - started > 60 * params.max_minutes)
        if task.validate is not None and eval_every and ((step + 1) % eval_every == 0 or step + 1 == steps or out_of_time):
            module.eval()
            with torch.no_grad():
                value = dist.broadcast(task.validate() if dist.is_main else None)
            module.train()
            curve.append({"step": step + 1, task.metric: value})
            if value > best:
                best, best_step, bad_evals = value, step + 1, 0
                best_state = {k: v.detach().to("cpu", copy=True) for k, v in task.module.state_dict().items()}
            else:
                bad_evals += 1
            if dist.is_main:
                log.info("step %d: validation %s %.4f (best %.4f)", step + 1, task.metric, value, best)
            if params.early_stopping_patience and bad_evals >= params.early_stopping_patience:
                if dist.is_main:
                    log.info("early stopping at step %d: no improvement in %d validations", step + 1, bad_evals)
                stop, stopped = True, EARLY_STOPPING
        if out_of_time and not stop:  # validated above, so the steps since the last validation are not lost
            if dist.is_main:
                log.info("time limit: stopping after step %d of %d (train.max_minutes %g)", step + 1, steps, params.max_minutes)
            stop, stopped = True, TIME_LIMIT
        if params.checkpoint_every and (step + 1) % params.checkpoint_every == 0 and step + 1 < steps and not stop:
            rngs = dist.gather(rng_states())
            if dist.is_main:
                save_checkpoint(out, step + 1, task.digest, task.module, {
                    "step": step + 1, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict(), "data_rng": rng.bit_generator.state,
                    "order": torch.from_numpy(np.asarray(order, dtype=np.int64)), "cursor": cursor,
                    "losses": losses, "seen": seen, "rng": rngs, "validation": curve, "best": best,
                    "best_step": best_step, "best_state": best_state, "bad_evals": bad_evals,
                })
            dist.barrier()
        if on_step is not None:
            on_step(step, losses[-1])
        if stop:
            break
    seconds = time.perf_counter() - started
    if not losses or not math.isfinite(float(np.mean(losses[-20:]))):
        raise ModelError("training diverged (loss is not finite)", fix="lower train.lr")
    module.eval()
    if best_state is not None:  # eval_every: the weights of the best validation, not the last step's
        task.module.load_state_dict(best_state)
        task.after_update()
        if dist.is_main:
            log.info("keeping the weights of step %d (validation %s %.4f)", best_step, task.metric, best)
    per_second = (seen - seen_before) / max(seconds, 1e-9)
    return LoopResult(
        losses=losses, seconds=seconds, examples_per_second=per_second, pairs_per_second=per_second * task.pairs_per_example,
        validation=curve, best_step=best_step, world_size=dist.world_size,
        effective_batch=params.batch_size * params.grad_accum_steps * dist.world_size, precision=precision,
        planned_steps=steps, stopped=stopped, examples=task.n_examples,
    )
