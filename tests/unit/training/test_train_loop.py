"""The shared training loop: length-grouped batches, gradient accumulation, precision, LoRA (tiny backbone)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from llmrec.config import CrossEncoderParams, LoraParams, ModelParams, TrainParams
from llmrec.errors import ConfigError, DataError
from llmrec.evaluation.protocols import candidate_frame
from llmrec.models.cross_encoder import CrossEncoder
from llmrec.models.two_tower import TwoTower
from llmrec.training.cross_encoder import train_cross_encoder
from llmrec.training.loop import epoch_order, resolve_precision
from llmrec.training.two_tower import train_two_tower

pytestmark = pytest.mark.usefixtures("one_thread")


def params(backbone, group_by_length=True, **train):
    settings = {"max_steps": 6, "batch_size": 4, "lr": 1e-3, "trainable_layers": 0, "warmup_ratio": 0.0,
                "seed": 13, "device": "cpu", "negatives_per_positive": 2, **train}
    model = ModelParams(backbone=str(backbone), max_length=48, cross_encoder=CrossEncoderParams(group_by_length=group_by_length))
    return model, TrainParams(**settings)


def weights(folder) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def changed_from_backbone(saved: dict[str, torch.Tensor], backbone) -> set[str]:
    """Names of saved backbone weights that differ from the backbone's (a cross-encoder prefixes them with bert.)."""
    base = weights(backbone)
    return {k for k, v in saved.items() if k.removeprefix("bert.") in base and not torch.equal(v, base[k.removeprefix("bert.")])}


# -- batches -------------------------------------------------------------------------------------------------------
def test_length_grouped_order_is_a_seeded_permutation_with_homogeneous_batches():
    lengths = np.random.default_rng(0).integers(5, 120, size=2000)
    grouped = epoch_order(np.random.default_rng(1), 2000, 8, lengths)
    plain = epoch_order(np.random.default_rng(1), 2000, 8, None)
    assert sorted(grouped) == list(range(2000))
    np.testing.assert_array_equal(grouped, epoch_order(np.random.default_rng(1), 2000, 8, lengths))

    def padding(order):  # padded tokens wasted per batch when each batch pads to its longest example
        batches = lengths[order].reshape(-1, 8)
        return float((batches.max(1, keepdims=True) - batches).sum())

    assert padding(grouped) < 0.1 * padding(plain)
    # the batch order stays random: long batches are not all at the start
    batch_max = lengths[grouped].reshape(-1, 8).max(1)
    assert abs(np.corrcoef(np.arange(len(batch_max)), batch_max)[0, 1]) < 0.2


def test_a_batch_larger_than_the_data_is_a_clear_error(split, tiny_backbone, tmp_path):
    with pytest.raises(DataError, match="larger than the .* training examples"):
        train_cross_encoder(split.train, *params(tiny_backbone, batch_size=100_000), tmp_path, progress=False)


# -- gradient accumulation -----------------------------------------------------------------------------------------
def test_accumulating_two_half_batches_equals_one_full_batch(split, tiny_backbone_no_dropout, tmp_path_factory):
    full_dir, accum_dir = tmp_path_factory.mktemp("full"), tmp_path_factory.mktemp("accum")
    common = {"group_by_length": False, "max_steps": 5}
    full = train_cross_encoder(split.train, *params(tiny_backbone_no_dropout, batch_size=8, **common), full_dir, progress=False)
    accum = train_cross_encoder(
        split.train, *params(tiny_backbone_no_dropout, batch_size=4, grad_accum_steps=2, **common), accum_dir, progress=False
    )
    assert full.effective_batch == accum.effective_batch == 8
    np.testing.assert_allclose(accum.losses, full.losses, atol=1e-5, rtol=0)
    expected, got = weights(full_dir), weights(accum_dir)
    assert changed_from_backbone(got, tiny_backbone_no_dropout)  # it did train
    for name, value in expected.items():
        if name == "classifier.bias":
            # a listwise softmax is blind to a shared offset, so this gradient is 0 up to rounding,
            # and Adam turns rounding noise into lr-sized steps: its value is noise in both runs
            continue
        # Adam moves a weight by about lr (1e-3) per step whatever its gradient's size, so a weight whose
        # gradient is near rounding level (a few pooler biases) drifts by a small fraction of lr between the
        # two summation orders; a dropped or doubled half-batch moves most weights by a large fraction of lr
        torch.testing.assert_close(got[name], value, atol=1e-4, rtol=0, msg=lambda m: f"{name}: {m}")


def test_accumulation_without_it_is_different(split, tiny_backbone_no_dropout, tmp_path_factory):
    """The test above could pass if accumulation were ignored: a half batch alone must train differently."""
    half_dir, full_dir = tmp_path_factory.mktemp("half"), tmp_path_factory.mktemp("full2")
    common = {"group_by_length": False, "max_steps": 5}
    train_cross_encoder(split.train, *params(tiny_backbone_no_dropout, batch_size=4, **common), half_dir, progress=False)
    train_cross_encoder(split.train, *params(tiny_backbone_no_dropout, batch_size=8, **common), full_dir, progress=False)
    half, full = weights(half_dir), weights(full_dir)
    gap = max(float((half[k] - full[k]).abs().max()) for k in full if k != "classifier.bias")
    assert gap > 1e-4


def test_two_tower_accumulation_counts_every_micro_batch(split, tiny_backbone, tmp_path):
    result = train_two_tower(split.train, *params(tiny_backbone, batch_size=4, grad_accum_steps=3), tmp_path, progress=False)
    assert result.effective_batch == 12 and result.steps == 6 and np.isfinite(result.losses).all()


# -- precision -----------------------------------------------------------------------------------------------------
def test_precision_defaults_to_fp32_off_gpu_and_refuses_fp16_on_cpu():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == "fp32"
    assert resolve_precision("bf16", cpu) == "bf16"
    with pytest.raises(ConfigError, match="fp16 needs a CUDA GPU"):
        resolve_precision("fp16", cpu)


def test_bf16_autocast_trains(split, tiny_backbone, tmp_path):
    result = train_two_tower(split.train, *params(tiny_backbone, precision="bf16", max_steps=4), tmp_path, progress=False)
    assert result.precision == "bf16" and np.isfinite(result.losses).all()
    assert TwoTower.load(tmp_path, device="cpu") is not None


# -- LoRA ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["cross-encoder", "two-tower"])
def test_lora_trains_adapters_only_and_saves_a_plain_merged_model(kind, split, tiny_backbone, tmp_path):
    model_params, train_params = params(tiny_backbone, lora=LoraParams(rank=4, alpha=8), max_steps=8, lr=5e-3)
    train = train_cross_encoder if kind == "cross-encoder" else train_two_tower
    result = train(split.train, model_params, train_params, tmp_path, progress=False)
    assert np.isfinite(result.losses).all()
    saved = weights(tmp_path)
    assert not any("lora" in k for k in saved)  # merged: the folder loads without peft
    changed = changed_from_backbone(saved, tiny_backbone)
    assert any("attention.self.query" in k for k in changed) and any("attention.self.value" in k for k in changed)
    assert not any("embeddings" in k or "intermediate" in k for k in changed)  # frozen outside the adapters
    frame = candidate_frame(split.holdout).head(120)
    if kind == "two-tower":
        scores = TwoTower.load(tmp_path, device="cpu").score_frame(frame, split.holdout.items)
    else:
        from llmrec.evaluation.evaluate import model_scorer

        scores = model_scorer(CrossEncoder.load(tmp_path, device="cpu"), split.holdout.items, 32, False)(frame)
    assert np.isfinite(scores).all() and np.std(scores) > 0


def test_max_epochs_caps_the_steps_on_a_small_set_of_examples(tmp_path):
    """train.max_epochs: a log too small for max_steps stops after that many passes (here 2 x 40 / 8 = 10 steps)."""
    from llmrec.config import TrainParams
    from llmrec.training.loop import LoopTask, run_loop

    torch.manual_seed(0)
    net = torch.nn.Linear(3, 1)
    x, y = torch.randn(40, 3), torch.randn(40, 1)
    task = LoopTask(module=net, param_groups=[{"params": list(net.parameters()), "lr": 1e-2}], n_examples=40,
                    loss=lambda module, idx: torch.nn.functional.mse_loss(module(x[idx]), y[idx]), digest="d")
    params = TrainParams(max_steps=100, batch_size=8, max_epochs=2, checkpoint_every=0, device="cpu")
    assert len(run_loop(task, params, tmp_path, torch.device("cpu"), progress=False).losses) == 10
    uncapped = params.model_copy(update={"max_epochs": 0.0, "max_steps": 30})
    assert len(run_loop(task, uncapped, tmp_path, torch.device("cpu"), progress=False).losses) == 30


def test_a_time_limit_validates_before_it_stops_so_the_last_steps_count(tmp_path):
    """train.max_minutes with train.eval_every: the stop validates too, so the best weights may be the last ones."""
    import time

    from llmrec.config import TrainParams
    from llmrec.training.loop import LoopTask, run_loop

    torch.manual_seed(0)
    net = torch.nn.Linear(3, 1)
    x = torch.randn(40, 3)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]])

    def loss(module, idx):
        time.sleep(0.05)
        return torch.nn.functional.mse_loss(module(x[idx]), y[idx])

    validate = lambda: -float(torch.nn.functional.mse_loss(net(x), y).detach())  # noqa: E731
    task = LoopTask(module=net, param_groups=[{"params": list(net.parameters()), "lr": 5e-2}], n_examples=40, loss=loss,
                    digest="d", validate=validate, metric="neg_mse")
    params = TrainParams(max_steps=1000, batch_size=8, eval_every=500, max_minutes=0.01, warmup_ratio=0.0,
                         checkpoint_every=0, device="cpu")  # 0.6 s: about 12 steps, no regular validation
    result = run_loop(task, params, tmp_path, torch.device("cpu"), progress=False)
    steps = len(result.losses)
    assert 0 < steps < 500
    assert result.validation == [{"step": steps, "neg_mse": pytest.approx(validate(), abs=1e-6)}]
    assert result.best_step == steps


def _result(stopped, validation, best_step, steps=38, planned=1131):
    from llmrec.training.loop import LoopResult

    return LoopResult(losses=[1.0] * steps, seconds=1.0, examples_per_second=1.0, pairs_per_second=1.0, validation=validation,
                      best_step=best_step, planned_steps=planned, stopped=stopped)


def test_a_time_stop_before_validation_levels_off_is_under_trained():
    from llmrec.training.loop import COMPLETED, EARLY_STOPPING, TIME_LIMIT, under_trained

    rising = [{"step": s, "ndcg": v} for s, v in ((10, 0.1), (20, 0.2), (30, 0.25), (38, 0.3))]
    short, note = under_trained(_result(TIME_LIMIT, rising, 38))
    assert short and note == "under-trained: stopped by time at step 38 of 1,131, validation still rising (best at step 38)"
    flat = [{"step": s, "ndcg": v} for s, v in ((10, 0.3), (20, 0.2), (30, 0.25), (38, 0.2))]
    assert under_trained(_result(TIME_LIMIT, flat, 10)) == (False, "stopped by time at step 38 of 1,131; validation had levelled off (best at step 10)")
    assert under_trained(_result(TIME_LIMIT, [], None))[0]  # nothing says it had levelled off
    assert not under_trained(_result(EARLY_STOPPING, flat, 10))[0]
    assert under_trained(_result(COMPLETED, [], None, steps=1131)) == (False, "completed 1,131 steps")
    # the planned length ran out while validation still rose: not under-trained (a budget choice), but said
    short, note = under_trained(_result(COMPLETED, rising, 38, steps=38))
    assert not short and note.startswith("completed 38 steps with validation still rising (best at step 38)")
    assert "train.max_epochs" in note
    assert under_trained(_result(COMPLETED, flat, 10, steps=38)) == (False, "completed 38 steps")


def test_training_stopped_by_the_clock_says_it_is_under_trained(split, tiny_backbone, tmp_path, caplog):
    import logging

    from llmrec.config import HybridExperimental, HybridParams, TrainParams
    from llmrec.training.hybrid import fit_hybrid

    caplog.set_level(logging.WARNING)
    params = TrainParams(max_steps=100_000, batch_size=8, eval_every=2, max_minutes=0.002, checkpoint_every=0, device="cpu")
    _, result = fit_hybrid(split.train, HybridParams(dim=16, layers=1, heads=1, sequence_length=8,
                                                        experimental=HybridExperimental(zero_shot=False, ease=False)),
                           params, tmp_path, backbone=str(tiny_backbone), progress=False)
    assert result.stopped == "time limit" and result.steps < result.planned_steps
    assert result.under_trained == (result.best_step in [r["step"] for r in result.validation[-2:]])
    assert result.note.startswith("under-trained: stopped by time" if result.under_trained else "stopped by time")
    if result.under_trained:
        assert "under-trained: stopped by time" in caplog.text
