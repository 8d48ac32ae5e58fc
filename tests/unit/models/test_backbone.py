"""Backbone resolution: bundled default, local folders, hub ids only from the local cache (never downloaded)."""

from __future__ import annotations

import shutil

import pytest

from llmrec.errors import ModelError
from llmrec.models.backbone import resolve_backbone


def test_the_default_backbone_is_the_bundled_minilm():
    folder = resolve_backbone("default")
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()


def test_a_hub_id_that_is_not_cached_fails_offline_with_how_to_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError) as err:
        resolve_backbone("sentence-transformers/all-mpnet-base-v2")
    text = str(err.value)
    assert "never downloads" in text and "huggingface-cli download sentence-transformers/all-mpnet-base-v2" in text


def test_a_hub_id_already_in_the_local_cache_is_used(tmp_path, monkeypatch, tiny_backbone):
    cache = tmp_path / "hub"
    snapshot = cache / "models--acme--tiny-bert" / "snapshots" / "0123abcd"
    shutil.copytree(tiny_backbone, snapshot)
    (cache / "models--acme--tiny-bert" / "refs").mkdir()
    (cache / "models--acme--tiny-bert" / "refs" / "main").write_text("0123abcd")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve_backbone("acme/tiny-bert") == snapshot


def test_a_folder_without_config_is_refused(tmp_path):
    with pytest.raises(ModelError, match="no config.json"):
        resolve_backbone(str(tmp_path))
