"""Scoring item texts (what serving does with raw texts) agrees with scoring ids (what training and evaluation do)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from llmrec.models.text import TextConfig, item_texts, render_item, render_user, user_text

ITEMS = pd.DataFrame(
    {
        "item_id": [f"N{i}" for i in range(12)],
        "title": [f"story number {i} about things" for i in range(12)],
        "text": "",
        "category": ["news", "sports", "finance"] * 4,
        "subcategory": "world",
    }
)


def test_rendering_is_one_template_for_catalogue_items_and_raw_texts():
    config = TextConfig(max_history=2)
    texts = item_texts(ITEMS, config)
    assert texts["N1"] == "sports / world: story number 1 about things" == render_item("story number 1 about things", "sports", "world", config)
    assert render_item("a headline", None, None, config) == "a headline"  # no category: the text alone
    assert render_item("a headline", "news", None, config) == "news / : a headline"
    assert item_texts(ITEMS, TextConfig(with_category=False))["N1"] == "story number 1 about things"
    # the user: newest first, at most max_history, unknown ids skipped; the same from ids or from texts
    history = ["N0", "N1", "nope", "N2"]
    assert user_text(history, texts, config) == f"{texts['N2']} | {texts['N1']}" == render_user([texts["N0"], texts["N1"], texts["N2"]], config)
    assert render_user([], config) == "no history" and render_user(["x"], TextConfig(max_history=0)) == ""


def test_items_render_every_field_the_source_has(tmp_path):
    """MovieLens: title, year, genres and tags; MIND: category, subcategory, title and abstract; a model saved before the
    details were rendered keeps rendering without them."""
    from llmrec.data.movielens import read_movielens

    folder = tmp_path / "ml"
    folder.mkdir()
    (folder / "movies.csv").write_text("movieId,title,genres\n1,Toy Story (1995),Animation|Children|Comedy\n")
    (folder / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,4.0,964982703\n")
    (folder / "tags.csv").write_text("userId,movieId,tag,timestamp\n1,1,pixar,964982703\n2,1,Pixar,964982703\n")
    movie = item_texts(read_movielens(folder).items, TextConfig())["1"]
    assert movie == "Animation / Children: Toy Story. 1995. Animation, Children, Comedy. Tags: pixar"
    news = pd.DataFrame({"item_id": ["N1"], "title": ["Storm hits"], "text": ["Schools close on the coast."],
                         "category": ["weather"], "subcategory": ["storms"]})
    assert item_texts(news, TextConfig())["N1"] == "weather / storms: Storm hits. Schools close on the coast."
    assert item_texts(news, TextConfig.from_dict({"max_history": 5, "with_category": True, "separator": " | "}))["N1"] == \
        "weather / storms: Storm hits"
    assert item_texts(ITEMS, TextConfig())["N1"] == "sports / world: story number 1 about things"  # no details: as before


@pytest.fixture(scope="module")
def models(tiny_backbone, one_thread):
    from llmrec.models.cross_encoder import CrossEncoder
    from llmrec.models.hybrid import Hybrid, HybridConfig, HybridNet
    from llmrec.models.text_encoder import FrozenTextEncoder
    from llmrec.models.two_tower import TwoTower

    encoder = FrozenTextEncoder(tiny_backbone, 32, "cpu")
    net = HybridNet(HybridConfig(dim=16, heads=2, layers=1, sequence_length=4, dropout=0.0), encoder.dim, 8, seed=1)
    with torch.no_grad():  # as if trained: the known items have an id part (it starts at zero)
        net.ids.weight[1:].normal_(0.0, 1.0, generator=torch.Generator().manual_seed(0))
    return {
        "cross-encoder": CrossEncoder.from_backbone(tiny_backbone, TextConfig(max_history=3), 32, "tiny", "cpu"),
        "two-tower": TwoTower.from_backbone(tiny_backbone, TextConfig(max_history=3), 32, "tiny", "cpu", pooling="attention"),
        # ids for N0..N7 only: N8..N11 are cold, scored by their text
        "hybrid": Hybrid(net, [f"N{i}" for i in range(8)], encoder, TextConfig(), "tiny", 32),
    }


@pytest.mark.parametrize("kind", ["cross-encoder", "two-tower", "hybrid"])
def test_text_scorer_equals_the_id_scorer(models, kind):
    from llmrec.models.ranker import ranker_scorer, text_scorer

    ranker = models[kind]
    texts = item_texts(ITEMS, ranker.text)
    history = ["N0", "N1", "N2", "N3", "N4"]  # longer than max_history: the newest 3 count
    candidates = ["N5", "N6", "N7", "N0", "N9"]
    by_id = ranker_scorer(ranker, ITEMS)(pd.DataFrame({"history": " ".join(history), "item_id": candidates}))
    by_text = text_scorer(ranker, ITEMS)([texts[i] for i in history], [texts[i] for i in candidates])
    # float32 scores summed in another order (batching, torch threads) differ by about 1e-7 of the largest score
    atol = 1e-5 * float(np.abs(by_id).max())
    np.testing.assert_allclose(by_text, by_id, rtol=1e-5, atol=atol)
    older = text_scorer(ranker, ITEMS)([texts[i] for i in history[:3]], [texts[i] for i in candidates])
    assert not np.allclose(older, by_id, rtol=1e-5, atol=atol)  # a different (newest-3) history, different scores
    empty = text_scorer(ranker, ITEMS)([], [texts[i] for i in candidates])
    np.testing.assert_allclose(empty, ranker_scorer(ranker, ITEMS)(pd.DataFrame({"history": "", "item_id": candidates})), rtol=1e-5, atol=atol)


def test_two_tower_text_scoring_uses_the_catalogue_cache_and_never_grows_it(models):
    from llmrec.models.ranker import text_scorer

    tower = models["two-tower"]
    tower.clear_cache()
    score = text_scorer(tower, ITEMS)  # encodes the catalogue once
    cached, encoded = len(tower._rows), tower.encoded_texts
    assert cached == len(ITEMS)
    texts = item_texts(ITEMS, tower.text)
    fresh = ["esports final draws a record crowd", "markets rally after the rate cut"]
    history, candidates = [texts["N1"], fresh[0]], [texts["N2"], fresh[1], fresh[0]]
    out = score(history, candidates)
    assert len(tower._rows) == cached and tower.encoded_texts == encoded  # request texts are not cached
    # encoded on the fly, a text scores as it does from the cache
    tower.encode_items(["X1", "X2"], fresh)
    assert len(tower._rows) == cached + 2
    np.testing.assert_allclose(out, score(history, candidates), rtol=1e-5, atol=1e-6)
    tower.clear_cache()


def test_hybrid_text_scoring_knows_catalogue_texts_and_never_caches_request_texts(models):
    from llmrec.models.ranker import text_scorer

    hybrid = models["hybrid"]
    score = text_scorer(hybrid, ITEMS)  # encodes the catalogue texts once
    encoded = hybrid.encoder.encoded
    texts = item_texts(ITEMS, hybrid.text)
    fresh = "esports final draws a record crowd"
    out = score([fresh], [texts["N2"], fresh])
    assert hybrid.encoder.encoded == encoded  # the request's unknown text was not cached
    # a warm catalogue item sent as its text keeps its id part: it differs from the same text as an unknown item
    other = ITEMS.assign(item_id=[f"X{i}" for i in range(12)])  # same texts, ids the model has never seen
    cold = text_scorer(hybrid, other)([fresh], [texts["N2"], fresh])
    assert not np.isclose(out[0], cold[0]) and np.isclose(out[1], cold[1], atol=1e-5)
