"""Training checkpoints: a killed two-tower run resumes from its last checkpoint and ends exactly
where an uninterrupted run ends (same losses, same scores); a checkpoint of other params is ignored."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from llmrec.config import ModelParams, TrainParams
from llmrec.evaluation.protocols import candidate_frame
from llmrec.models.two_tower import TwoTower
from llmrec.training.checkpoint import CHECKPOINT_DIR, CHECKPOINT_META, CHECKPOINT_WEIGHTS, TRAINER_STATE
from llmrec.training.two_tower import train_two_tower

STEPS, EVERY, KILL_AFTER = 12, 4, 6


pytestmark = pytest.mark.usefixtures("one_thread")  # fixtures `one_thread` and `split` live in conftest.py


@pytest.fixture(scope="module")
def frame(split):
    return candidate_frame(split.holdout).head(200)


def params(backbone, **train):
    settings = {"max_steps": STEPS, "batch_size": 4, "lr": 1e-3, "trainable_layers": 0, "warmup_ratio": 0.1,
                "seed": 13, "device": "cpu", "checkpoint_every": EVERY, **train}
    return ModelParams(backbone=str(backbone)), TrainParams(**settings)


class Killed(Exception):
    """Stands in for the process being killed mid-run."""


def kill_after(n: int):
    def on_step(step: int, loss: float) -> None:
        if step + 1 == n:
            raise Killed
    return on_step


def scores(folder, split, frame) -> np.ndarray:
    return TwoTower.load(folder, device="cpu").score_frame(frame, split.holdout.items)


@pytest.fixture(scope="module")
def uninterrupted(split, frame, tiny_backbone, tmp_path_factory):
    folder = tmp_path_factory.mktemp("uninterrupted")
    result = train_two_tower(split.train, *params(tiny_backbone), folder, progress=False)
    return result, scores(folder, split, frame)


def test_a_killed_run_resumes_from_its_checkpoint_and_ends_like_an_uninterrupted_one(
    uninterrupted, split, frame, tiny_backbone, tmp_path, caplog
):
    full, full_scores = uninterrupted
    assert len(full.losses) == STEPS
    assert not (tmp_path / CHECKPOINT_DIR).exists()

    with pytest.raises(Killed):
        train_two_tower(split.train, *params(tiny_backbone), tmp_path, on_step=kill_after(KILL_AFTER), progress=False)
    checkpoint = tmp_path / CHECKPOINT_DIR
    assert (checkpoint / TRAINER_STATE).is_file() and (checkpoint / CHECKPOINT_WEIGHTS).is_file()
    assert '"step": 4' in (checkpoint / CHECKPOINT_META).read_text()
    assert not list(tmp_path.glob(f"{CHECKPOINT_DIR}.*"))  # no temporary or aside folder left behind

    caplog.set_level(logging.INFO, logger="llmrec.training.loop")
    resumed_steps = []
    result = train_two_tower(
        split.train, *params(tiny_backbone), tmp_path, on_step=lambda step, loss: resumed_steps.append(step), progress=False
    )
    assert "resuming from step 4" in caplog.text
    assert resumed_steps == list(range(EVERY, STEPS))  # steps 1-4 were not run again
    np.testing.assert_allclose(result.losses, full.losses, atol=1e-5, rtol=0)
    np.testing.assert_allclose(scores(tmp_path, split, frame), full_scores, atol=1e-5, rtol=0)
    assert not checkpoint.exists()  # removed once the final model is saved


def test_a_checkpoint_of_other_params_is_ignored(uninterrupted, split, frame, tiny_backbone, tmp_path, caplog):
    full, full_scores = uninterrupted
    with pytest.raises(Killed):
        train_two_tower(split.train, *params(tiny_backbone, lr=5e-4), tmp_path, on_step=kill_after(KILL_AFTER), progress=False)
    assert (tmp_path / CHECKPOINT_DIR / CHECKPOINT_META).is_file()

    caplog.set_level(logging.INFO, logger="llmrec.training.loop")
    steps = []
    result = train_two_tower(split.train, *params(tiny_backbone), tmp_path, on_step=lambda step, loss: steps.append(step), progress=False)
    assert "other params or data; starting fresh" in caplog.text
    assert "resuming" not in caplog.text
    assert steps == list(range(STEPS))
    np.testing.assert_allclose(result.losses, full.losses, atol=1e-5, rtol=0)
    np.testing.assert_allclose(scores(tmp_path, split, frame), full_scores, atol=1e-5, rtol=0)
    assert not (tmp_path / CHECKPOINT_DIR).exists()


def test_checkpoint_params_do_not_change_training(uninterrupted, split, tiny_backbone, tmp_path):
    full, _ = uninterrupted
    result = train_two_tower(split.train, *params(tiny_backbone, checkpoint_every=0), tmp_path, progress=False)
    np.testing.assert_allclose(result.losses, full.losses, atol=1e-5, rtol=0)


def test_the_cross_encoder_resumes_too(split, tiny_backbone, tmp_path_factory, caplog):
    from safetensors.torch import load_file

    from llmrec.training.cross_encoder import train_cross_encoder

    model_params, train_params = params(tiny_backbone, max_steps=8, batch_size=2, negatives_per_positive=2)
    full_dir, killed_dir = tmp_path_factory.mktemp("ce-full"), tmp_path_factory.mktemp("ce-killed")
    full = train_cross_encoder(split.train, model_params, train_params, full_dir, progress=False)
    with pytest.raises(Killed):
        train_cross_encoder(split.train, model_params, train_params, killed_dir, on_step=kill_after(KILL_AFTER), progress=False)
    assert '"step": 4' in (killed_dir / CHECKPOINT_DIR / CHECKPOINT_META).read_text()
    caplog.set_level(logging.INFO, logger="llmrec.training.loop")
    result = train_cross_encoder(split.train, model_params, train_params, killed_dir, progress=False)
    assert "resuming from step 4" in caplog.text
    np.testing.assert_allclose(result.losses, full.losses, atol=1e-5, rtol=0)
    expected, got = load_file(str(full_dir / "model.safetensors")), load_file(str(killed_dir / "model.safetensors"))
    assert expected.keys() == got.keys()
    for name, value in expected.items():
        torch.testing.assert_close(got[name], value, atol=1e-5, rtol=0)
    assert not (killed_dir / CHECKPOINT_DIR).exists()


def test_validation_curve_early_stopping_and_best_weights(split, frame, tiny_backbone, tmp_path, caplog):
    from llmrec.training.two_tower import split_validation

    fit, held = split_validation(split.train)
    assert not set(fit.impressions["impression_id"]) & set(held.impressions["impression_id"])
    assert fit.impressions["timestamp"].max() <= held.impressions["timestamp"].min()

    caplog.set_level(logging.INFO, logger="llmrec.training.loop")
    # an absurd learning rate: validation gets no better after the first evaluation, so training stops early
    model_params, train_params = params(
        tiny_backbone, max_steps=40, lr=0.5, warmup_ratio=0.0, eval_every=2, early_stopping_patience=2, checkpoint_every=0
    )
    result = train_two_tower(split.train, model_params, train_params, tmp_path, progress=False)
    curve = result.validation
    assert curve and [r["step"] for r in curve] == list(range(2, 2 * len(curve) + 1, 2))
    assert all(np.isfinite(r["ndcg@10"]) for r in curve)
    assert result.steps == len(result.losses) == curve[-1]["step"] < 40
    assert "early stopping at step" in caplog.text
    best = max(r["ndcg@10"] for r in curve)
    assert curve[-1]["ndcg@10"] < best or curve[-2]["ndcg@10"] < best  # the last `patience` evaluations did not improve
    # the saved model is the best one, not the last: it scores the validation slice at the best nDCG
    from llmrec.training.two_tower import _validate

    saved = TwoTower.load(tmp_path, device="cpu")
    assert _validate(saved, candidate_frame(held), split.train.items) == pytest.approx(best, abs=1e-6)


def test_resume_keeps_the_validation_curve(split, tiny_backbone, tmp_path_factory):
    model_params, train_params = params(tiny_backbone, eval_every=2)
    full_dir, killed_dir = tmp_path_factory.mktemp("val-full"), tmp_path_factory.mktemp("val-killed")
    full = train_two_tower(split.train, model_params, train_params, full_dir, progress=False)
    with pytest.raises(Killed):
        train_two_tower(split.train, model_params, train_params, killed_dir, on_step=kill_after(KILL_AFTER), progress=False)
    resumed = train_two_tower(split.train, model_params, train_params, killed_dir, progress=False)
    assert [r["step"] for r in resumed.validation] == list(range(2, STEPS + 1, 2))
    np.testing.assert_allclose([r["ndcg@10"] for r in resumed.validation], [r["ndcg@10"] for r in full.validation], atol=1e-6)
    np.testing.assert_allclose(resumed.losses, full.losses, atol=1e-5, rtol=0)
