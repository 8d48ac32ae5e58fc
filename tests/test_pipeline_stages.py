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
