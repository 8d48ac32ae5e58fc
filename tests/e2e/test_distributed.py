"""Data-parallel training for real: `torchrun --nproc_per_node 2 -m llmrec.cli train` with 2 CPU processes
(gloo) trains the same model as one process whose batch is the two processes' batches together."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

BIN = Path(sys.executable).parent


def llmrec(project: Path, sets: list[str], *command: str, launcher: list[str] | None = None) -> subprocess.CompletedProcess:
    args = [arg for s in sets for arg in ("--set", s)]
    base = launcher + ["-m", "llmrec.cli"] if launcher else [str(BIN / "llmrec")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    done = subprocess.run([*base, *args, *command], cwd=project, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return done


TORCHRUN = [str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2"]


@pytest.fixture
def sets(project, tiny_world, tiny_backbone_no_dropout) -> list[str]:
    sets = [f"data.path={tiny_world / 'period1'}", f"model.backbone={tiny_backbone_no_dropout}", "model.max_length=48",
            "train.max_steps=4", "train.trainable_layers=0", "train.lr=1e-3", "train.negatives_per_positive=2",
            "train.max_train_impressions=150", "train.checkpoint_every=2", "train.warmup_ratio=0"]
    llmrec(project, sets, "ingest")
    return sets


def test_two_processes_train_what_one_process_trains_on_their_combined_batch(project, sets):
    ce = [*sets, "model.type=cross-encoder"]
    ddp = llmrec(project, [*ce, "train.batch_size=4", "train.out=outputs/ddp"], "train", launcher=TORCHRUN)
    assert ddp.stdout.count("trained a cross-encoder") == 1  # one process reports
    assert "x 2 processes" in ddp.stdout and "8 examples per step" in ddp.stdout
    llmrec(project, [*ce, "train.batch_size=8", "train.out=outputs/single"], "train")

    info_ddp = json.loads((project / "outputs/ddp/train.json").read_text())
    info_one = json.loads((project / "outputs/single/train.json").read_text())
    assert (info_ddp["world_size"], info_ddp["effective_batch"]) == (2, 8)
    assert (info_one["world_size"], info_one["effective_batch"]) == (1, 8)
    assert info_ddp["losses"] == pytest.approx(info_one["losses"], abs=1e-5)
    assert not (project / "outputs/ddp/checkpoint").exists()  # written at step 2, removed at the end

    got, expected = load_file(str(project / "outputs/ddp/model.safetensors")), load_file(str(project / "outputs/single/model.safetensors"))
    base = load_file(str(Path(sets[1].split("=", 1)[1]) / "model.safetensors"))
    shared = [k for k in expected if k.removeprefix("bert.") in base]
    moved = {k: float((expected[k] - base[k.removeprefix("bert.")]).abs().max()) for k in shared}
    assert sorted(moved.values())[len(moved) // 2] > 1e-3  # it trained
    for name in shared:
        # the same up to float rounding (summation order differs across processes), amplified a little by
        # Adam on near-zero gradients: under 1% of how far training moved each weight
        assert float((got[name] - expected[name]).abs().max()) < max(0.01 * moved[name], 1e-6), name


def test_the_two_tower_trains_distributed_and_other_commands_refuse(project, sets):
    done = llmrec(project, [*sets, "model.type=two-tower", "train.batch_size=4", "train.out=outputs/tt"], "train", launcher=TORCHRUN)
    assert "trained a two-tower" in done.stdout
    assert json.loads((project / "outputs/tt/train.json").read_text())["world_size"] == 2
    from llmrec.models.two_tower import TwoTower

    assert TwoTower.load(project / "outputs/tt", device="cpu").hidden_size == 32

    env = {**os.environ, "WORLD_SIZE": "2", "RANK": "0"}
    refused = subprocess.run([str(BIN / "llmrec"), "evaluate"], cwd=project, env=env, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "only `llmrec train` does" in refused.stderr
