"""Shared fixtures: offline, quiet environment; tiny data and a tiny random BERT built locally.

The folders mirror how much a test runs: `unit/<package>/` (one module, the package's layout), `integration/`
(stages and real Prefect/MLflow/DVC/GX pieces together, in-process or as subprocesses), `e2e/` (flows, servers,
stacks and torchrun, started the way a user starts them). Each test gets the marker of its folder, so
`pytest -m "not e2e"` is the quick loop and `pytest -m unit` the quickest."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

for key, value in {
    "DO_NOT_TRACK": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DVC_NO_ANALYTICS": "1",
    "GX_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ.setdefault(key, value)

REPO = Path(__file__).resolve().parents[1]
KINDS = ("unit", "integration", "e2e")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with its folder's kind (unit, integration, e2e) and run the kinds in that order, so a
    broken unit fails in the first minutes rather than after the stacks."""
    tests = Path(__file__).resolve().parent
    kinds = {}
    for item in items:
        kind = Path(item.fspath).resolve().relative_to(tests).parts[0]
        if kind not in KINDS:
            raise pytest.UsageError(f"{item.nodeid}: tests live under tests/unit, tests/integration or tests/e2e")
        item.add_marker(getattr(pytest.mark, kind))
        kinds[item.nodeid] = KINDS.index(kind)
    items.sort(key=lambda item: kinds[item.nodeid])  # stable: file order within a kind
TINY = {"n_items": 400, "n_users": 150, "days_per_period": 4, "impressions_per_day": 120}


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory) -> Path:
    """The tiny synthetic MIND dataset, both periods."""
    from llmrec.config import SyntheticSize
    from llmrec.data.synthetic import generate

    out = tmp_path_factory.mktemp("tiny") / "synthetic"
    generate(out, SyntheticSize(**TINY), seed=7, periods=(1, 2))
    return out


def _tiny_words(tiny_world: Path) -> tuple[str, ...]:
    from llmrec.data.mind import read_news

    words: set[str] = set()
    for period in ("period1", "period2"):
        items = read_news(tiny_world / period / "news.tsv")
        for text in items["title"].tolist() + items["text"].tolist() + items["category"].tolist() + items["subcategory"].tolist():
            words.update(text.lower().replace(":", " ").replace("/", " ").split())
    return tuple(sorted(words))


@pytest.fixture(scope="session")
def tiny_backbone(tmp_path_factory, tiny_world) -> Path:
    """A tiny random BERT whose word-level vocabulary covers the tiny dataset's words."""
    from llmrec.models.backbone import make_tiny_backbone

    return make_tiny_backbone(tmp_path_factory.mktemp("backbone") / "tiny-bert", words=_tiny_words(tiny_world))


@pytest.fixture(scope="session")
def tiny_backbone_no_dropout(tmp_path_factory, tiny_world) -> Path:
    """The tiny BERT without dropout: training is then the same whatever the batch layout (accumulation, DDP)."""
    from llmrec.models.backbone import make_tiny_backbone

    return make_tiny_backbone(tmp_path_factory.mktemp("backbone") / "tiny-bert-nd", words=_tiny_words(tiny_world), dropout=0.0)


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def dvc(cwd: Path, *args: str) -> str:
    exe = Path(sys.executable).parent / "dvc"
    return subprocess.run([str(exe) if exe.is_file() else "dvc", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def init_project(root: Path, remote: Path | None = None, code: bool = True) -> Path:
    """A git + DVC repo at `root` with the repo's params.yaml and dvc.yaml (and llmrec/, for dvc's deps)."""
    root.mkdir(parents=True)
    for name in ("params.yaml", "dvc.yaml", ".dvcignore"):
        shutil.copy(REPO / name, root / name)
    if code:
        shutil.copytree(REPO / "llmrec", root / "llmrec", ignore=shutil.ignore_patterns("__pycache__"))
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.email", "test@llmrec.invalid")
    git(root, "config", "user.name", "llmrec tests")
    dvc(root, "init", "-q")
    if remote is not None:
        dvc(root, "remote", "add", "-d", "local", str(remote))
    (root / ".gitignore").write_text("/outputs/\n/mlflow.db\n/mlartifacts/\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "init")
    return root


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """A fresh llmrec project: a real git + DVC repo with the repo's dvc.yaml and a local remote."""
    root = init_project(tmp_path / "project", remote=tmp_path / "dvc-remote")
    monkeypatch.chdir(root)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return root


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one thread: a tiny model on 2 shared cores runs ~40x faster (no spinning worker threads)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def split(tiny_world):
    """The temporal split (last day held out) of the tiny data's period 1."""
    from llmrec.data.ingest import load_source
    from llmrec.data.split import temporal_split

    return temporal_split(load_source(tiny_world / "period1").dataset, 1)


SERVING_ITEMS = [f"N{i}" for i in range(1, 121)]


@pytest.fixture(scope="session")
def serving_registry(tmp_path_factory, tiny_backbone):
    """A real sqlite MLflow registry of tiny untrained models for the serving tests.

    Models: "m" (cross-encoder) and "tt" (two-tower), versions 1 and 2 of each (the same weights twice). No
    alias is set: each test sets the aliases it needs first, and tests use different aliases where they can.
    Returns a namespace with root, items (the catalogue Parquet), ids (its item ids) and versions (name -> list).
    """
    from types import SimpleNamespace

    import pandas as pd

    from llmrec import tracking
    from llmrec.models.cross_encoder import CrossEncoder
    from llmrec.models.text import TextConfig
    from llmrec.models.two_tower import TwoTower

    root = tmp_path_factory.mktemp("serving")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        items = root / "items.parquet"
        pd.DataFrame(
            {
                "item_id": SERVING_ITEMS,
                "title": [f"story number {i} about things" for i in range(len(SERVING_ITEMS))],
                "text": "",
                "category": ["news", "sports", "finance"] * (len(SERVING_ITEMS) // 3),
                "subcategory": "world",
            }
        ).to_parquet(items)
        folders = {
            "m": CrossEncoder.from_backbone(tiny_backbone, TextConfig(max_history=3), 32, str(tiny_backbone), "cpu").save(root / "ce"),
            "tt": TwoTower.from_backbone(tiny_backbone, TextConfig(max_history=20), 32, str(tiny_backbone), "cpu").save(root / "tt"),
        }
        versions: dict[str, list[str]] = {}
        for name in ("m", "tt"):
            for i in (1, 2):
                registered = tracking.register_model(
                    folders[name], items, model_name=name, experiment="serving", params={"p": i}, metrics={"ndcg@10": 0.1 * i},
                    tags={"data.dvc_md5": f"md5-{i}", "data.git_revision": f"rev{i}", "data.train_end": "2019-11-14T00:00:00"},
                    root=root,
                )
                versions.setdefault(name, []).append(registered.version)
    return SimpleNamespace(root=root, items=items, ids=SERVING_ITEMS, versions=versions)


@pytest.fixture
def loopback_port() -> int:
    """A free 127.0.0.1 port in the range the tests may use (8600-8699)."""
    import socket

    first, last = 8600, 8699
    for port in range(first, last + 1):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {first}-{last}")
