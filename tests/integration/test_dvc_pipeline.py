"""`dvc repro` runs the pipeline stages, reruns only what changed; metrics, plots and experiments work."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml
from conftest import git


def _dvc(root: Path, *args: str) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    exe = Path(sys.executable).parent / "dvc"
    proc = subprocess.run([str(exe) if exe.is_file() else "dvc", *args], cwd=root, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"dvc {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


def _ran(output: str) -> set[str]:
    return {stage for stage in ("ingest", "validate", "train", "evaluate") if f"Running stage '{stage}'" in output}


def test_repro_reruns_only_what_changed(project: Path, tiny_world: Path, tiny_backbone: Path) -> None:
    shutil.copytree(tiny_world / "period1", project / "data" / "synthetic")
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["model"]["backbone"] = str(tiny_backbone)
    params["train"].update(max_steps=2, batch_size=2, max_train_impressions=50)
    params["eval"].update(max_impressions=20)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (project / ".gitignore").write_text("/outputs/\n/mlflow.db\n/mlartifacts/\n/data/\n")
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "tiny pipeline")

    assert _ran(_dvc(project, "repro")) == {"ingest", "validate", "train", "evaluate"}
    assert "didn't change" in _dvc(project, "repro") or _ran(_dvc(project, "repro")) == set()
    assert "up to date" in _dvc(project, "status")

    params["eval"]["max_impressions"] = 15  # only the evaluation depends on eval.*
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert _ran(_dvc(project, "repro")) == {"evaluate"}

    metrics = json.loads(_dvc(project, "metrics", "show", "--json"))
    flat = json.dumps(metrics)
    assert '"ndcg@10"' in flat and '"popularity"' in flat
    _dvc(project, "plots", "show", "-o", "plots_html")
    html = (project / "plots_html" / "index.html").read_text()
    assert "outputs_plots_train_loss_csv" in html and "outputs_plots_rankers_csv" in html

    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "eval on 15 impressions")
    out = _dvc(project, "exp", "run", "-S", "train.lr=0.0005")
    assert _ran(out) == {"train", "evaluate"}  # data stages are cached; the experiment retrains and re-evaluates
    shown = _dvc(project, "exp", "show", "--json")
    assert "0.0005" in shown
