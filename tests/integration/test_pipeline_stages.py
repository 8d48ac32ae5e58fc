"""Pipeline stages called directly, on the tiny data: what they do with settings that leave something out."""

from __future__ import annotations

import shutil
from pathlib import Path

from llmrec import pipeline
from llmrec.config import load_params


def test_a_cross_encoder_reranks_the_retriever_even_when_it_is_not_a_listed_baseline(
    tmp_path: Path, monkeypatch, tiny_world: Path, tiny_backbone: Path, one_thread
) -> None:
    """eval.baselines without eval.retriever (the README's example) was a ConfigError; now the retriever is fitted
    for the re-ranking only."""
    from llmrec.models.cross_encoder import CrossEncoder
    from llmrec.models.text import TextConfig

    monkeypatch.chdir(tmp_path)
    shutil.copytree(tiny_world / "period1", tmp_path / "data" / "period1")
    params = load_params(tmp_path / "none.yaml", [
        "data.path=data/period1", f"model.backbone={tiny_backbone}", "model.type=cross-encoder", "model.max_length=32",
        "eval.max_impressions=20", "eval.catalogue_impressions=5", "eval.sampled_on_impressions=false",
        'eval.baselines=["popularity", "random"]',
    ])
    pipeline.run_ingest(params)
    CrossEncoder.from_backbone(tiny_backbone, TextConfig(), 32, str(tiny_backbone), "cpu").save(params.train.out)
    evaluation = pipeline.run_evaluate(params, with_champion=False, progress=False)
    catalogue = evaluation["markdown"].split("Protocol: catalogue")[1]
    assert "model [ease top-20]" in catalogue


def test_the_registered_run_counts_the_rows_left_out_and_keeps_their_file(tmp_path: Path, monkeypatch, tiny_backbone: Path) -> None:
    import json

    from mlflow import MlflowClient

    from llmrec.models.io import fingerprint
    from llmrec.models.text import TextConfig
    from llmrec.models.two_tower import TwoTower

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    data = tmp_path / "data" / "ml"
    data.mkdir(parents=True)
    (data / "movies.csv").write_text("movieId,title,genres\n1,Heat (1995),Crime\n2,Up (2009),Animation\n")
    rows = [f"{u},{1 + (u + k) % 2},4.0,{964982703 + 100 * (2 * u + k)}" for u in range(1, 501) for k in range(2)]
    rows[-1] = "999,42,4.0,964982703"  # a movie movies.csv does not have
    (data / "ratings.csv").write_text("userId,movieId,rating,timestamp\n" + "\n".join(rows) + "\n")
    params = load_params(tmp_path / "none.yaml", ["data.path=data/ml", "tracking.experiment=bad-rows"])
    assert pipeline.run_ingest(params)["bad_rows"]["rows"] == 1
    # what train, evaluate and version leave for register (their own tests cover them)
    TwoTower.from_backbone(tiny_backbone, TextConfig(), 32, str(tiny_backbone), "cpu").save(params.train.out)
    sha = fingerprint(params.train.out)
    split = {"train_end": "2000-07-30T00:00:00+00:00", "cutoff": "2000-07-30T00:00:00+00:00"}
    (Path(params.train.out) / "train.json").write_text(json.dumps({"model_sha": sha, "split": split, "pairs_per_second": 1.0, "seconds": 1.0}))
    Path(params.eval.out).mkdir(parents=True)
    (Path(params.eval.out) / "metrics.json").write_text(json.dumps({"metrics": {"model": {"ndcg@10": 0.1}}, "holdout": {"model_sha": sha}}))
    version = {"dvc_md5": "abc.dir", "dvc_file": "outs: []\n", "git_revision": "0" * 40, "git_dirty": False}
    (Path(params.data.prepared) / "data_version.json").write_text(json.dumps(version))

    registered = pipeline.run_register(params)
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    metrics = client.get_run(registered["run_id"]).data.metrics
    assert metrics["data.bad_rows"] == 1 and metrics["data.rows_read"] == 1002
    assert "quarantine.csv" in [a.path for a in client.list_artifacts(registered["run_id"])]
