"""The vector models (two-tower, hybrid) through the pipeline: train, evaluate (they score the catalogue
themselves), MLflow pyfunc, REST."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from llmrec import pipeline, tracking
from llmrec.config import load_params

KINDS = {
    "two-tower": ["model.type=two-tower", "train.max_steps=8"],
    "hybrid": ["model.type=hybrid", "train.max_steps=8", "model.hybrid.dim=16", "model.hybrid.layers=1", "model.hybrid.sequence_length=8"],
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_vector_model_trains_evaluates_registers_and_serves(kind: str, tmp_path: Path, monkeypatch, tiny_world: Path, tiny_backbone: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    shutil.copytree(tiny_world / "period1", tmp_path / "data" / "period1")
    params = load_params(
        tmp_path / "none.yaml",
        [
            "data.path=data/period1",
            *KINDS[kind],
            f"model.backbone={tiny_backbone}",
            "model.max_length=32",
            "train.batch_size=8",
            "eval.max_impressions=40",
            "eval.catalogue_impressions=10",
            "eval.baselines=[popularity, random, tfidf]",
            "eval.retriever=tfidf",
        ],
    )
    pipeline.run_ingest(params)
    pipeline.run_validate(params)
    trained = pipeline.run_train(params, progress=False)
    assert trained["steps"] == 8 and Path(trained["model_dir"], "model.safetensors").is_file()

    evaluation = pipeline.run_evaluate(params, with_champion=False, progress=False)
    assert {"model", "popularity", "random", "tfidf"} <= set(evaluation["metrics"])
    assert "| model |" in evaluation["markdown"].split("Protocol: catalogue")[1]  # scored directly, not re-ranked

    items = Path(params.data.prepared) / "items.parquet"
    version = tracking.register_model(
        params.train.out, items, model_name="tt", experiment="e", params={}, metrics={"ndcg@10": 0.1}, tags={}
    ).version
    tracking.promote("tt", version, "test")
    import mlflow

    mlflow.set_tracking_uri(tracking.tracking_uri(tmp_path))
    ranked = mlflow.pyfunc.load_model("models:/tt@champion").predict(
        pd.DataFrame({"history": ["", ""], "item_id": pd.read_parquet(items)["item_id"].head(2)})
    )
    assert list(ranked.columns) == ["item_id", "score"] and ranked["score"].notna().all()

    from llmrec.serving import create_app

    ids = pd.read_parquet(items)["item_id"].tolist()
    app = create_app(model_name="tt", root=tmp_path, poll_seconds=0)
    with TestClient(app) as client:
        app.state.holder.refresh()
        reply = client.post("/recommend", json={"history": ids[:3], "candidates": ids[3:13], "k": 3})
        assert reply.status_code == 200, reply.text
        assert len(reply.json()["items"]) == 3 and reply.json()["model"]["version"] == version
        whole = client.post("/recommend", json={"history": ids[:3], "k": 5})  # no candidates: the whole catalogue
        assert whole.status_code == 200, whole.text
        top = [item["item_id"] for item in whole.json()["items"]]
        assert len(top) == 5 and not set(top) & set(ids[:3])
        scores = [item["score"] for item in whole.json()["items"]]
        assert scores == sorted(scores, reverse=True)
