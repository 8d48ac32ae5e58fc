"""Two-tower model: training, save/load, the item cache, catalogue scoring, determinism (tiny backbone)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from llmrec.config import ModelParams, TrainParams
from llmrec.data.contract import history_list
from llmrec.errors import ModelError
from llmrec.evaluation.protocols import candidate_frame
from llmrec.models import cross_encoder
from llmrec.models.text import TextConfig
from llmrec.models.two_tower import TOWER_PREFIX, TwoTower
from llmrec.training.two_tower import build_click_examples, train_two_tower

POOLINGS = ("mean", "attention")


pytestmark = pytest.mark.usefixtures("one_thread")  # fixtures `one_thread` and `split` live in conftest.py


@pytest.fixture(scope="module")
def frame(split):
    return candidate_frame(split.holdout)


def params(backbone, **train):
    settings = {"max_steps": 30, "batch_size": 8, "lr": 1e-3, "trainable_layers": 0, "warmup_ratio": 0.1, "seed": 13, "device": "cpu"}
    return ModelParams(backbone=str(backbone)), TrainParams(**{**settings, **train})


def train_and_keep(split, backbone, folder, pooling):
    """Train; return (TrainResult, the in-memory model as it was saved)."""
    kept = {}
    original = TwoTower.save

    def spy(self, out):
        kept["model"] = self
        return original(self, out)

    TwoTower.save = spy
    try:
        result = train_two_tower(split.train, *params(backbone), folder, progress=False, pooling=pooling)
    finally:
        TwoTower.save = original
    return result, kept["model"]


@pytest.fixture(scope="module")
def trained(split, tiny_backbone, tmp_path_factory):
    out = {}
    for pooling in POOLINGS:
        folder = tmp_path_factory.mktemp(f"two-tower-{pooling}")
        out[pooling] = (folder, *train_and_keep(split, tiny_backbone, folder, pooling))
    return out


def count_forward(model: TwoTower) -> dict:
    calls = {"n": 0}

    def hook(module, args, output):
        calls["n"] += 1

    model.encoder.register_forward_hook(hook)
    return calls


@pytest.mark.parametrize("pooling", POOLINGS)
def test_training_lowers_loss_and_reload_gives_the_same_scores(trained, split, frame, pooling):
    folder, result, in_memory = trained[pooling]
    assert result.steps == 30 and len(result.losses) == 30 and np.isfinite(result.losses).all()
    assert np.mean(result.losses[-5:]) < np.mean(result.losses[:5])
    assert result.examples == int((split.train.interactions["label"] == 1).sum())
    meta = json.loads((folder / "llmrec.json").read_text())
    assert meta["type"] == "two-tower" and meta["pooling"] == pooling and meta["temperature"] == 0.05
    assert meta["text"]["max_history"] == 20  # model.two_tower.max_history by default

    reloaded = TwoTower.load(folder, device="cpu")
    assert reloaded.pooling == pooling and reloaded.version > 0
    before = in_memory.score_frame(frame, split.holdout.items)
    after = reloaded.score_frame(frame, split.holdout.items)
    assert before.shape == (len(frame),) and np.isfinite(after).all()
    np.testing.assert_allclose(after, before, atol=1e-5, rtol=0)
    np.testing.assert_allclose(reloaded.scorer(split.holdout.items)(frame), after, atol=1e-6, rtol=0)
    assert np.abs(after).max() <= 1 / 0.05 + 1e-4  # unit vectors / temperature
    for name, value in in_memory.user_tower.state_dict().items():
        torch.testing.assert_close(reloaded.user_tower.state_dict()[name], value)
    if pooling == "attention":  # the learned attention moved away from its mean-pooling start
        assert reloaded.user_tower.query.abs().sum() > 0


def test_item_cache_encodes_each_item_once_and_is_dropped_when_weights_change(trained, split, frame, tiny_backbone, tmp_path):
    folder = trained["mean"][0]
    model = TwoTower.load(folder, device="cpu")
    calls = count_forward(model)
    first = model.score_frame(frame, split.holdout.items)
    assert calls["n"] > 0 and model.encoded_texts > 0
    encoded, n = model.encoded_texts, calls["n"]
    second = model.score_frame(frame, split.holdout.items)
    assert calls["n"] == n and model.encoded_texts == encoded  # a second call encodes no item
    np.testing.assert_array_equal(first, second)
    model.item_matrix(split.holdout.items)  # the rest of the catalogue (items in no frame row)
    catalogue = len(set(model._texts(split.holdout.items).values()))
    assert model.encoded_texts == catalogue
    n = calls["n"]
    model.recommend(frame["history"].iloc[0], split.holdout.items, k=5)
    model.score_frame(frame, split.holdout.items)
    assert calls["n"] == n and model.encoded_texts == catalogue

    # load different weights into the same object: the cache must not serve the old vectors
    fresh = TwoTower.from_backbone(tiny_backbone, TextConfig(max_history=20), 64, "tiny", "cpu").save(tmp_path / "fresh")
    model.load_weights(fresh)
    third = model.score_frame(frame, split.holdout.items)
    assert calls["n"] > n
    np.testing.assert_allclose(third, TwoTower.load(fresh, "cpu").score_frame(frame, split.holdout.items), atol=1e-5, rtol=0)
    assert np.abs(third - first).max() > 1e-3

    # in-place weight edits without mark_changed() are caught by the parameters' version counters
    n = calls["n"]
    with torch.no_grad():
        next(model.encoder.parameters()).add_(0.1)
    model.score_frame(frame, split.holdout.items)
    assert calls["n"] > n


@pytest.mark.parametrize("pooling", POOLINGS)
def test_catalogue_scoring_equals_pair_scoring_and_excludes_history(trained, split, frame, pooling):
    folder = trained[pooling][0]
    items = split.holdout.items
    history = max(frame["history"].unique(), key=lambda h: len(history_list(h)))
    seen = set(history_list(history))
    assert seen

    catalogue_model = TwoTower.load(folder, device="cpu")
    every = catalogue_model.recommend(history, items, k=len(items), exclude_history=False)
    top = catalogue_model.recommend(history, items, k=10)
    ids, matrix = catalogue_model.item_matrix(items)
    assert matrix.shape == (len(ids), catalogue_model.hidden_size) and len(every) == len(ids)

    pair_model = TwoTower.load(folder, device="cpu")  # a cold cache, other batches: same numbers
    pairs = pd.DataFrame({"impression_id": "q", "item_id": ids, "history": history, "label": 0})
    pair_scores = pd.Series(pair_model.score_frame(pairs, items), index=ids)
    np.testing.assert_allclose(every["score"].to_numpy(), pair_scores[every["item_id"]].to_numpy(), atol=1e-5, rtol=0)

    assert len(top) == 10 and not seen & set(top["item_id"]) and top["rank"].tolist() == list(range(1, 11))
    assert (np.diff(top["score"].to_numpy()) <= 0).all()
    expected = [i for i in every["item_id"] if i not in seen][:10]
    assert top["item_id"].tolist() == expected
    assert seen & set(every["item_id"])  # without exclusion, history items are ranked too


def test_empty_and_unknown_histories_share_the_learned_no_history_vector(trained, split):
    model = TwoTower.load(trained["attention"][0], device="cpu")
    texts = model._texts(split.holdout.items)
    users = model.user_vectors(["", "not-an-item another-unknown", [], "N-unknown"], texts)
    for row in users[1:]:
        torch.testing.assert_close(row, users[0])
    torch.testing.assert_close(users[0], torch.nn.functional.normalize(model.user_tower.no_history.detach(), dim=0))
    known = list(texts)
    long = model.user_vectors([" ".join(known[:40]), " ".join(known[:40][-20:])], texts)  # only the 20 newest count
    torch.testing.assert_close(long[0], long[1])


def test_saved_folder_is_safetensors_and_json_only(trained):
    from safetensors import safe_open

    folder = trained["attention"][0]
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert {p.suffix for p in files} <= {".safetensors", ".json", ".txt"}
    assert "model.safetensors" in {p.name for p in files}
    for path in files:
        head = path.read_bytes()[:2]
        assert not (head[:1] == b"\x80" and head[1:2] in {bytes([v]) for v in range(2, 6)}), f"{path.name} is a pickle"
    with safe_open(str(folder / "model.safetensors"), framework="pt") as fh:
        tower = {k for k in fh.keys() if k.startswith(TOWER_PREFIX)}
    assert tower == {TOWER_PREFIX + k for k in ("no_history", "query", "recency")}
    digest = TwoTower.fingerprint(folder)
    assert digest == __import__("hashlib").sha256((folder / "model.safetensors").read_bytes()).hexdigest()[:16]  # the weights, tower included


def test_loading_a_cross_encoder_folder_is_refused(tiny_backbone, tmp_path):
    folder = cross_encoder.CrossEncoder.from_backbone(tiny_backbone, TextConfig(), 64, "tiny", "cpu").save(tmp_path / "ce")
    with pytest.raises(ModelError, match="not a two-tower"):
        TwoTower.load(folder, device="cpu")


def test_same_seed_gives_the_same_model(trained, split, frame, tiny_backbone, tmp_path):
    folder, result, _ = trained["mean"]
    again, _ = train_and_keep(split, tiny_backbone, tmp_path / "again", "mean")
    np.testing.assert_allclose(again.losses, result.losses, atol=1e-5, rtol=0)
    first = TwoTower.load(folder, device="cpu").score_frame(frame, split.holdout.items)
    second = TwoTower.load(tmp_path / "again", device="cpu").score_frame(frame, split.holdout.items)
    np.testing.assert_allclose(second, first, atol=1e-5, rtol=0)


def test_examples_and_history_length(split):
    examples = build_click_examples(split.train, negatives=4, max_impressions=50, seed=1)
    recent = split.train.impressions.sort_values("timestamp", kind="stable").tail(50)["impression_id"]
    assert set(examples["impression_id"]) <= set(recent)
    assert examples["negatives"].map(len).max() <= 4
    labels = split.train.interactions.set_index(["impression_id", "item_id"])["label"]
    assert all(labels[(i, p)] == 1 for i, p in zip(examples["impression_id"], examples["positive"]))
    assert all(labels[(i, n)] == 0 for i, negs in zip(examples["impression_id"], examples["negatives"]) for n in negs)
