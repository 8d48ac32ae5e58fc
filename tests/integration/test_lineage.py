"""A registered model leads back to its exact training data: `llmrec data checkout --model-version N`."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from llmrec import tracking
from llmrec.cli import app
from llmrec.versioning import version_data


def _digest(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_model_version_data_is_restored_byte_for_byte_after_two_changes(project: Path, tiny_world: Path, tiny_backbone: Path) -> None:
    from llmrec.models.cross_encoder import CrossEncoder
    from llmrec.models.text import TextConfig

    data = project / "data" / "synthetic"
    shutil.copytree(tiny_world / "period1", data / "period1")
    model_dir = CrossEncoder.from_backbone(tiny_backbone, TextConfig(), 32, str(tiny_backbone), "cpu").save(project / "outputs" / "model")
    items = project / "outputs" / "items.parquet"
    pd.DataFrame({"item_id": ["N1"], "title": ["a"], "text": "", "category": "x", "subcategory": "y"}).to_parquet(items)

    def register(tag: str) -> tuple[str, dict[str, str]]:
        v = version_data(data)
        registered = tracking.register_model(
            model_dir, items, model_name="llmrec", experiment="e", params={}, metrics={"ndcg@10": 0.1},
            tags={"data.dvc_file": v.dvc_file, "data.dvc_md5": v.dvc_md5, "run_name": tag},
        )
        return registered.version, _digest(data)

    v1, files1 = register("first")
    shutil.copytree(tiny_world / "period2", data / "period2")  # change 1: a new batch
    v2, files2 = register("second")
    behaviors = data / "period1" / "behaviors.tsv"  # change 2: an edited file, one removed
    behaviors.write_text(behaviors.read_text().replace("\t", "\t", 1) + "")
    behaviors.write_bytes(behaviors.read_bytes()[:-200])
    (data / "period2" / "news.tsv").unlink()
    current = _digest(data)
    assert len({tuple(files1.items()), tuple(files2.items()), tuple(current.items())}) == 3

    runner = CliRunner()
    result = runner.invoke(app, ["data", "checkout", "--model-version", v1])
    assert result.exit_code == 0, result.output
    assert _digest(data) == files1
    result = runner.invoke(app, ["data", "checkout", "--model-version", v2])
    assert result.exit_code == 0, result.output
    assert _digest(data) == files2

    # the hint it prints, run as printed in a shell, brings back the data as it was before the first checkout
    hint = re.search(r"Back to [^`]*`([^`]+)`", result.output)
    assert hint, result.output
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    ran = subprocess.run(["bash", "-c", hint[1]], cwd=project, env=env, capture_output=True, text=True)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert _digest(data) == current
    result = runner.invoke(app, ["data", "checkout", "--latest"])  # nothing left to return to: says so
    assert result.exit_code == 1 and "no data snapshot to return to" in result.output
    result = runner.invoke(app, ["data", "checkout", "--model-version", "99"])
    assert result.exit_code == 1 and "no version 99" in result.output
