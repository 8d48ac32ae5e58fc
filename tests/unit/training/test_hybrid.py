"""Hybrid recommender (text + item ids, causal transformer user encoder) and the SASRec baseline (tiny backbone)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from llmrec.config import HybridExperimental, HybridParams, ModelParams, TrainParams
from llmrec.data.contract import Dataset, SourceInfo
from llmrec.evaluation.protocols import candidate_frame
from llmrec.metrics import impression_metrics
from llmrec.models.hybrid import UNKNOWN, Hybrid, HybridConfig, HybridNet
from llmrec.training.hybrid import PAD, hold_out_last, sequence_windows, train_hybrid, user_sequences

pytestmark = pytest.mark.usefixtures("one_thread")


def params(backbone, **hybrid):
    """Model and train params of a small hybrid; `hybrid` sets model.hybrid's fields and its experimental ones alike."""
    settings = {"dim": 32, "heads": 2, "layers": 1, "sequence_length": 12, **hybrid}
    experimental = {k: settings.pop(k) for k in list(settings) if k in HybridExperimental.model_fields}
    model = ModelParams(backbone=str(backbone), max_length=32, hybrid=HybridParams(**settings, experimental=HybridExperimental(**experimental)))
    return model, TrainParams(max_steps=40, batch_size=16, lr=1e-3, warmup_ratio=0.05, seed=3, device="cpu")


@pytest.fixture(scope="module")
def trained(split, tiny_backbone, tmp_path_factory):
    folder = tmp_path_factory.mktemp("hybrid")
    result = train_hybrid(split.train, *params(tiny_backbone), folder, progress=False)
    return folder, result


def test_sequences_put_the_explicit_history_first_then_clicks_in_time_order():
    ts = pd.to_datetime(["2020-01-01", "2020-01-02", "2020-01-03", "2020-01-04"], utc=True)
    imps = pd.DataFrame({"impression_id": ["1", "2", "3"], "user_id": ["u", "u", "v"], "timestamp": ts[[0, 2, 1]],
                         "history": ["a b", "a b c", ""]})
    inter = pd.DataFrame({"impression_id": ["2", "1", "1", "3"], "user_id": ["u", "u", "u", "v"],
                          "item_id": ["d", "c", "x", "a"], "timestamp": ts[[2, 0, 0, 1]], "label": [1, 1, 0, 1]})
    items = pd.DataFrame({"item_id": list("abcdx"), "title": list("abcdx")})
    mind = Dataset(items, imps, inter, SourceInfo("mind", True, True))
    assert user_sequences(mind).to_dict() == {"u": ["a", "b", "c", "d"], "v": ["a"]}
    derived = Dataset(items, imps.assign(history=""), inter, SourceInfo("movielens", False, False))
    assert user_sequences(derived).to_dict() == {"u": ["c", "d"], "v": ["a"]}


def test_windows_make_every_consumption_after_the_first_a_target_once():
    seqs = pd.Series({"u": list("abcdefg"), "v": ["a"], "w": list("bc")})
    row = {c: k for k, c in enumerate("abcdefg")}
    windows = sequence_windows(seqs, row, length=3)
    assert windows.shape[1] == 4
    targets = windows[:, 1:][windows[:, 1:] != PAD]
    assert sorted(targets.tolist()) == sorted(row[c] for c in "abcdefg" + "a" + "bc")  # each consumption once
    for w in windows:  # left-padded, then real items to the end
        first = int(np.argmax(w != PAD))
        assert (w[:first] == PAD).all() and (w[first:] != PAD).all()
    assert [-1, -1, -1, row["a"]] in windows.tolist()  # a user's first item is predicted from no history


def test_the_user_encoder_is_causal():
    net = HybridNet(HybridConfig(dim=16, heads=2, layers=2, sequence_length=6, dropout=0.0, text=False), 0, 10).eval()
    _, inputs, _, _ = net.items(None, torch.arange(11))
    a = torch.tensor([[1, 2, 3, 4, 5, 6]])
    b = torch.tensor([[1, 2, 3, 9, 8, 7]])  # same first three items, different later ones
    mask = torch.ones(1, 6, dtype=torch.bool)
    out_a, out_b = net.users(inputs[a], None, mask), net.users(inputs[b], None, mask)
    torch.testing.assert_close(out_a[:, :3], out_b[:, :3])  # a position never sees later items
    assert not torch.allclose(out_a[:, 3:], out_b[:, 3:])


def test_training_lowers_the_loss_and_a_reload_scores_the_same(trained, split):
    folder, result = trained
    assert result.steps == 40 and np.isfinite(result.losses).all()
    assert np.mean(result.losses[-5:]) < np.mean(result.losses[:5])
    assert (folder / "model.safetensors").read_bytes()[8:9] == b"{"  # safetensors, not a pickle
    meta = json.loads((folder / "llmrec.json").read_text())
    assert meta["type"] == "hybrid" and meta["items_with_ids"] > 0
    model = Hybrid.load(folder, device="cpu")
    frame = candidate_frame(split.holdout)
    first = model.score_frame(frame, split.holdout.items)
    again = Hybrid.load(folder, device="cpu").score_frame(frame, split.holdout.items)
    np.testing.assert_allclose(first, again, rtol=0, atol=1e-5)
    assert np.isfinite(first).all() and np.std(first) > 0


def test_the_fingerprint_covers_the_hybrid_weights(trained, split, tiny_backbone, tmp_path):
    folder, _ = trained
    model_params, train_params = params(tiny_backbone)
    train_hybrid(split.train, model_params, train_params.model_copy(update={"max_steps": 5}), tmp_path, progress=False)
    assert Hybrid.fingerprint(folder) != Hybrid.fingerprint(tmp_path)  # same backbone, other hybrid weights


def test_cold_items_fall_back_to_their_text(trained, split):
    folder, _ = trained
    model = Hybrid.load(folder, device="cpu")
    items = split.holdout.items
    cold = items[~items["item_id"].isin(model.row)].head(5)
    warm = items[items["item_id"].isin(model.row)].head(5)
    assert len(cold) and len(warm)
    assert (model.item_rows(cold["item_id"].tolist()) == UNKNOWN).all()
    vectors, bias = model.item_vectors(cold["item_id"].tolist(), dict(zip(cold["item_id"], cold["title"])))
    assert torch.isfinite(vectors).all() and len(set(bias.tolist())) == 1  # one shared "unknown" bias
    # two cold items with different texts get different vectors: the text decides
    assert not torch.allclose(vectors[0], vectors[1])


def test_recommend_ranks_the_catalogue_like_score_frame_and_skips_the_history(trained, split):
    folder, _ = trained
    model = Hybrid.load(folder, device="cpu")
    items = split.holdout.items
    history = " ".join(items["item_id"].head(4))
    top = model.recommend(history, items, k=5)
    assert len(top) == 5 and not set(top["item_id"]) & set(history.split())
    frame = pd.DataFrame({"history": history, "item_id": top["item_id"]})
    np.testing.assert_allclose(model.score_frame(frame, items), top["score"], rtol=0, atol=1e-4)


@pytest.mark.parametrize("variant", [{"text": False}, {"ids": False}])
def test_ids_only_and_text_only_variants_train(variant, split, tiny_backbone, tmp_path):
    model_params, train_params = params(tiny_backbone, **variant)
    result = train_hybrid(split.train, model_params, train_params.model_copy(update={"max_steps": 15}), tmp_path, progress=False)
    assert np.isfinite(result.losses).all()
    scores = Hybrid.load(tmp_path, device="cpu").score_frame(candidate_frame(split.holdout).head(100), split.holdout.items)
    assert np.isfinite(scores).all()


def test_sasrec_baseline_is_deterministic_and_ranks(split):
    from llmrec.config import SasrecParams
    from llmrec.data.context import with_context
    from llmrec.evaluation.baselines import sasrec_scorer

    train = with_context(split.train, split.train, 0, 0)
    settings = SasrecParams(dim=16, layers=1, sequence_length=10, max_epochs=3, patience=2, batch_size=16)
    frame = candidate_frame(split.holdout)
    a = sasrec_scorer(train, split.holdout.items, settings, seed=1)(frame)
    b = sasrec_scorer(train, split.holdout.items, settings, seed=1)(frame)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    per = impression_metrics(frame.assign(score=a), [10])
    assert np.isfinite(per["auc"]).all()
    seen = set(train.interactions.loc[train.interactions["label"] == 1, "item_id"].astype(str))
    unknown = ~frame["item_id"].astype(str).isin(seen)
    assert unknown.any() and (~unknown).any()
    assert a[unknown.to_numpy()].max() < a[~unknown.to_numpy()].min()  # an id model puts items it never saw last


def test_item_age_is_time_since_the_log_first_showed_the_item():
    from llmrec.data.context import first_seen_hours, hours, with_item_age

    ts = pd.to_datetime(["2020-01-01 00:00", "2020-01-01 06:00", "2020-01-02 00:00"], utc=True)
    imps = pd.DataFrame({"impression_id": ["1", "2", "3"], "user_id": ["u", "v", "u"], "timestamp": ts, "history": ["h", "", "h a"]})
    inter = pd.DataFrame({"impression_id": ["1", "2", "3"], "user_id": ["u", "v", "u"], "item_id": ["a", "b", "c"],
                          "timestamp": ts, "label": [1, 0, 1]})
    log = Dataset(pd.DataFrame({"item_id": list("abch"), "title": list("abch")}), imps, inter, SourceInfo("mind", True, True))
    first = first_seen_hours(log)
    assert first["h"] == first["a"] == hours(ts[:1])[0] and first["b"] == hours(ts[1:2])[0]  # "h": in u's first history
    frame = pd.DataFrame({"impression_id": ["3", "3", "3#0", "9"], "item_id": ["a", "zz", "b", "a"]})
    ages = with_item_age(frame, imps, first)["age_hours"].tolist()
    assert ages[:3] == [24.0, 0.0, 18.0] and np.isnan(ages[3])  # unknown item: new (0); unknown impression: NaN


def test_on_positive_only_logs_an_item_has_an_age_only_once_consumed_before():
    """MovieLens-style logs show an item only by its consumption: the first one is what is predicted, so an item
    not consumed before the moment has no age (NaN) in evaluation and, in training, is a candidate without
    its id part or age: nothing may tell the model that the target is about to be consumed for the first time."""
    from llmrec.data.context import hours, with_item_age

    imps = pd.DataFrame({"impression_id": ["ml:u#0", "ml:u#1"], "timestamp": pd.to_datetime(["2020-01-01", "2020-01-02"], utc=True)})
    first = pd.Series({"a": hours(imps["timestamp"])[0]})
    frame = pd.DataFrame({"impression_id": ["ml:u#0", "ml:u#1", "ml:u#1"], "item_id": ["a", "a", "b"]})
    ages = with_item_age(frame, imps, first, consumed_only=True)["age_hours"].tolist()
    assert np.isnan(ages[0]) and ages[1] == 24.0 and np.isnan(ages[2])  # "#" inside the event ids is fine too

    config = HybridConfig(dim=8, heads=2, layers=1, sequence_length=3, dropout=0.0, text=False, age=True, cold_hours=0.0)
    net = HybridNet(config, 0, 4).eval()
    with torch.no_grad():
        net.age.weight.normal_()
    inputs, targets = torch.tensor([[-1, 1, 2]]), torch.tensor([[1, 2, 3]])
    target_hours = torch.tensor([[10.0, 20.0, 30.0]])
    first_seen = torch.tensor([0.0, 10.0, 20.0, 30.0, 99.0])  # each target is its item's first consumption
    logits, _, _, _ = net(None, torch.arange(5), inputs, targets, None, target_hours, first_seen, consumed_only=True)
    assert torch.isfinite(logits).all()  # nothing is masked: masking the others would point at the target
    # every item not consumed before a target's time scores alike (no id, no age): the target too
    for row, first_unconsumed in enumerate([1, 2, 3]):
        assert torch.allclose(logits[row, first_unconsumed:], logits[row, first_unconsumed])


def test_items_the_log_had_not_shown_yet_are_no_training_candidates():
    config = HybridConfig(dim=8, heads=2, layers=1, sequence_length=3, dropout=0.0, text=False)
    net = HybridNet(config, 0, 4).eval()
    inputs, targets = torch.tensor([[-1, 1, 2]]), torch.tensor([[1, 2, 3]])
    target_hours = torch.tensor([[10.0, 20.0, 30.0]])
    first_seen = torch.tensor([0.0, 5.0, 15.0, 25.0, 99.0])  # catalogue rows 0..4; row 4 appears only at hour 99
    logits, answer, _, _ = net(None, torch.arange(5), inputs, targets, None, target_hours, first_seen)
    assert answer.tolist() == [1, 2, 3]
    available = torch.isfinite(logits)
    assert available.tolist() == [[True, True, False, False, False], [True, True, True, False, False], [True, True, True, True, False]]
    unknown_times, _, _, _ = net(None, torch.arange(5), inputs, targets, None, torch.full((1, 3), float("nan")), first_seen)
    assert torch.isfinite(unknown_times).all()  # no time, no masking (and the "age unknown" offset)


@pytest.mark.parametrize("zero_shot_weight", [None, 0.7])
def test_an_untrained_hybrid_scores_exactly_like_the_zero_shot_model(split, tiny_backbone, zero_shot_weight):
    """The text path starts as the zero-shot recommender (cosine of the mean history text vector and the item's); the
    zero-shot part adds that same cosine, times its weight (a text-only hybrid: an id part starts at random)."""
    from llmrec.models.text import TextConfig, item_texts
    from llmrec.models.text_encoder import FrozenTextEncoder

    encoder = FrozenTextEncoder(tiny_backbone, 32, "cpu")
    # dim = the backbone's: the text part's start is then an orthogonal map, which keeps every cosine
    config = HybridConfig(dim=encoder.dim, heads=2, layers=1, sequence_length=8, dropout=0.0, age=False, ids=False,
                          zero_shot=zero_shot_weight is not None)
    net = HybridNet(config, encoder.dim, 5).eval()
    if zero_shot_weight is not None:
        with torch.no_grad():
            from llmrec.models.hybrid import PARTS

            net.blend[:, PARTS.index("zero_shot")] = zero_shot_weight
    model = Hybrid(net, [], encoder, TextConfig(), "tiny", 32)
    items = split.holdout.items
    texts = item_texts(items, model.text)
    frame = candidate_frame(split.holdout).head(200)
    got = model.score_frame(frame, items)
    expected = []
    for history, item in zip(frame["history"], frame["item_id"]):
        ids = [i for i in history.split() if i in texts][-8:]
        user = torch.nn.functional.normalize(encoder.encode([texts[i] for i in ids]).mean(0), dim=0) if ids else torch.zeros(encoder.dim)
        expected.append((1 + (zero_shot_weight or 0.0)) * float(user @ encoder.encode([texts[item]])[0]) / net.config.temperature)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_the_id_part_of_the_user_is_free_of_item_text(tiny_backbone):
    """The id part of a user vector comes from the id encoder alone (a SASRec inside the hybrid), so changing every
    item text changes the text part of the user and leaves the id part as it was."""
    torch.manual_seed(0)
    net = HybridNet(HybridConfig(dim=16, heads=2, layers=1, sequence_length=6, dropout=0.0), 24, 5).eval()
    ids = torch.arange(1, 6)
    mask = torch.ones(1, 6, dtype=torch.bool)
    window = torch.tensor([[0, 1, 2, 3, 4, 0]])

    def user(text):
        _, inputs, _, v_text = net.items(text, ids)
        return net.users(inputs[window], v_text[window], mask)[0, -1]

    a, b = user(torch.randn(5, 24)), user(torch.randn(5, 24))
    assert not torch.allclose(a[:24], b[:24])  # text part follows the texts
    torch.testing.assert_close(a[24:], b[24:])  # id part does not


def test_a_set_new_item_offset_is_saved_with_the_model(split, tiny_backbone, tmp_path):
    model_params, train_params = params(tiny_backbone, new_item_offset=1.5)
    train_hybrid(split.train, model_params, train_params.model_copy(update={"max_steps": 5}), tmp_path, progress=False)
    assert float(Hybrid.load(tmp_path, device="cpu").net.no_id_offset) == 1.5


def test_the_text_weight_follows_the_support_of_the_item(trained, split):
    """The text part of an item is weighted by its support bucket (log2 of its training consumptions; 0 = no id),
    so a new item and an item with many clicks can lean on their text differently."""
    from llmrec.models.hybrid import SUPPORT_BUCKETS

    folder, _ = trained
    model = Hybrid.load(folder, device="cpu")
    support = model.net.support
    assert int(support[UNKNOWN]) == 0 and (support[1:] >= 1).all() and (support < SUPPORT_BUCKETS).all()
    assert len(set(support[1:].tolist())) > 1  # items differ in support
    items = split.holdout.items
    texts = dict(zip(items["item_id"], items["title"]))
    known = [i for i in items["item_id"] if i in model.row][:1]
    net = model.net
    with torch.no_grad():
        net.text_scale.fill_(1.0)
        before, _ = model.item_vectors(known, texts)
        net.text_scale[int(support[model.row[known[0]]])] = 2.0
        after, _ = model.item_vectors(known, texts)
    d = net.text_dim
    torch.testing.assert_close(after[0, :d], 2 * before[0, :d])  # its bucket's weight, and only the text part
    torch.testing.assert_close(after[0, d:], before[0, d:])


def test_validation_holds_out_the_last_consumption_of_the_most_recent_users():
    seqs = pd.Series({"u": list("abcd"), "v": list("ab"), "w": ["c"], "x": list("cz")}, dtype=object)
    times = pd.Series({"u": [1.0, 2.0, 3.0, 9.0], "v": [4.0, 5.0], "w": [20.0], "x": [6.0, 30.0]}, dtype=object)
    row = {c: k for k, c in enumerate("abcd")}  # z is not in the catalogue
    kept, kept_times, held, users = hold_out_last(seqs, times, row, users=1)
    # w has one consumption and x one usable one: neither can be held out; u's last (9) is later than v's (5)
    assert held == [([row["a"], row["b"], row["c"]], row["d"], 9.0)] and users == ["u"]
    assert kept["u"] == list("abc") and kept_times["u"] == [1.0, 2.0, 3.0]
    assert kept["v"] == list("ab") and kept["x"] == list("cz")
    assert seqs["u"] == list("abcd")  # the input is untouched


def test_validation_selects_the_weights_of_the_best_step(split, tiny_backbone, tmp_path, caplog):
    import logging

    caplog.set_level(logging.INFO)
    model_params, train_params = params(tiny_backbone, ease=False, zero_shot=False)  # their weights are chosen after (other tests)
    train_params = train_params.model_copy(update={"max_steps": 30, "eval_every": 5, "lr": 3e-3})
    result = train_hybrid(split.train, model_params, train_params, tmp_path, progress=False)
    curve = result.validation
    assert [r["step"] for r in curve] == [5, 10, 15, 20, 25, 30]
    assert all(0 < r["ndcg_full"] <= 1 for r in curve)
    best = max(curve, key=lambda r: r["ndcg_full"])
    assert f"keeping the weights of step {best['step']}" in caplog.text
    # the saved model is the best step's: scoring the held-out consumptions again, parts as trained, gives the best value
    from llmrec.training.blend import raw_parts, validation_ndcg_full

    model = Hybrid.load(tmp_path, device="cpu")
    with raw_parts(model.net):
        value = validation_ndcg_full(model.net, *held_out_inputs(split.train, model))
    assert value == pytest.approx(best["ndcg_full"], abs=1e-5)


def held_out_inputs(train, model, with_impressions: bool = False):
    """(Scoring, HeldOut) of the validation slice, as `fit_hybrid` builds them."""
    from llmrec.data.context import first_seen_hours
    from llmrec.models.text import item_texts
    from llmrec.training.blend import HeldOut, Scoring
    from llmrec.training.hybrid import impression_negatives, timed_sequences, training_catalogue

    sequences, times = timed_sequences(train)
    catalogue, _ = training_catalogue(train, sequences, True)
    row = {item: k for k, item in enumerate(catalogue)}
    _, kept_times, held, users = hold_out_last(sequences, times, row)
    base = float(np.nanmin([t for ts in kept_times for t in ts]))
    first_seen = torch.tensor(first_seen_hours(train).reindex(catalogue).to_numpy(dtype=np.float64) - base, dtype=torch.float32)
    texts = item_texts(train.items, model.text)
    scoring = Scoring(model.text_vectors([texts[i] for i in catalogue]), model.item_rows(catalogue), first_seen,
                      not train.source.logged_negatives, torch.device("cpu"))
    found = impression_negatives(train, row, 3, cap=None)  # the clicks' impressions: the blend is chosen among them on MIND
    shown = [found.get((u, catalogue[a], w)) for u, (_, a, w) in zip(users, held)] if with_impressions else None
    return scoring, HeldOut([h for h, _, _ in held], np.asarray([a for _, a, _ in held]), np.asarray([w - base for _, _, w in held]),
                            shown)


def held_out_ndcg(model, train) -> dict[str, float]:
    """Validation nDCG@10 of the model as it scores (its blend) and of each of its parts alone."""
    from llmrec.training.blend import ranking_quality, raw_parts, scored_blocks

    scoring, held = held_out_inputs(train, model, with_impressions=True)
    out = {"model": [], **{name: [] for name in model.net.part_columns()}}
    for parts, offsets, allowed, answers in scored_blocks(model.net, scoring, held):
        out["model"].append(ranking_quality(sum(parts.values()) + offsets, allowed, answers)[0])
    with raw_parts(model.net):
        for parts, _, allowed, answers in scored_blocks(model.net, scoring, held):
            for name, logits in parts.items():
                out[name].append(ranking_quality(logits, allowed, answers)[0])
    return {name: float(torch.cat(v).mean()) for name, v in out.items()}


@pytest.mark.parametrize("steps", [2, 10, 40])  # a few per cent, a quarter and all of a 40-step budget
def test_the_blend_never_ranks_the_held_out_consumptions_below_one_of_its_parts(split, tiny_backbone, tmp_path, steps, caplog):
    import logging

    caplog.set_level(logging.INFO)
    model_params, train_params = params(tiny_backbone, ease=True, ease_max_items=100, zero_shot=True)
    train_params = train_params.model_copy(update={"max_steps": steps, "eval_every": max(1, steps // 2)})
    train_hybrid(split.train, model_params, train_params, tmp_path, progress=False)
    model = Hybrid.load(tmp_path, device="cpu")
    assert set(model.net.part_columns()) == {"text", "zero_shot", "ids", "ease"}
    quality = held_out_ndcg(model, split.train)
    assert all(quality["model"] >= quality[part] - 1e-9 for part in model.net.part_columns()), quality
    assert "blend:" in caplog.text and "clicks among their impressions" in caplog.text  # MIND: chosen within impressions


def test_a_part_that_is_noise_loses_its_weight(split, tiny_backbone, tmp_path):
    from llmrec.models.hybrid import PARTS
    from llmrec.training.blend import choose_blend

    model_params, train_params = params(tiny_backbone, ease=True, ease_max_items=100, zero_shot=False)
    train_hybrid(split.train, model_params, train_params.model_copy(update={"max_steps": 20, "eval_every": 10}), tmp_path, progress=False)
    model = Hybrid.load(tmp_path, device="cpu")
    with torch.no_grad():  # the id part becomes noise that dwarfs the others
        model.net.ids.weight.normal_(0.0, 5.0)
        model.net.ids.weight[UNKNOWN].zero_()
    scoring, held = held_out_inputs(split.train, model)
    choice = choose_blend(model.net, scoring, held)
    from llmrec.models.hybrid import BLEND_GROUPS

    present = torch.unique(torch.as_tensor(BLEND_GROUPS)[model.net.support[scoring.ids]])  # groups that have items
    ids_weight = model.net.blend[present, PARTS.index("ids")]
    assert choice.chosen != "as trained" and float(ids_weight.max()) < 0.3, (choice, ids_weight)
    fixed = {n: v for n, v in choice.ndcg.items() if n != "fitted"}
    if choice.chosen == "fitted":  # it beat the best fixed choice by more than one standard error
        assert choice.ndcg["fitted"] > max(fixed.values()) + choice.margin - 1e-12
    else:  # else the best fixed choice is kept
        assert choice.ndcg[choice.chosen] == max(fixed.values())


def test_without_validation_every_part_keeps_the_weight_it_trained_with(split, tiny_backbone, tmp_path):
    model_params, train_params = params(tiny_backbone, ease=True, ease_max_items=100)
    train_hybrid(split.train, model_params, train_params.model_copy(update={"max_steps": 5}), tmp_path, progress=False)
    model = Hybrid.load(tmp_path, device="cpu")
    assert bool((model.net.blend == 1).all()) and float(model.net.offset_scale) == 1.0


def test_the_ease_part_scores_like_the_ease_baseline_and_the_vectors_like_training():
    from llmrec.evaluation.baselines import ease_matrix
    from llmrec.models.collaborative import most_consumed, sequence_matrix

    seqs = pd.Series({"u1": list("abc"), "u2": list("ab"), "u3": list("bcd"), "u4": list("d")})
    row = {c: k for k, c in enumerate("abcde")}  # e: never consumed
    fit = sequence_matrix(seqs, pd.Index(list(row)))
    top = most_consumed(fit, 3)
    weights = ease_matrix(fit[:, top], 1.0)
    assert top.tolist() == [row["a"], row["b"], row["c"]]  # the 3 most consumed, in catalogue order
    X = np.array([[1, 1, 1], [1, 1, 0], [0, 1, 1], [0, 0, 0]], dtype=float)
    gram = X.T @ X + np.eye(3)
    P = np.linalg.inv(gram)
    np.testing.assert_allclose(weights, np.where(np.eye(3, dtype=bool), 0.0, -P / np.diag(P)), atol=1e-9)
    from scipy.sparse import csr_matrix

    np.testing.assert_allclose(ease_matrix(csr_matrix(X), 1.0), weights)

    net = HybridNet(HybridConfig(dim=16, heads=2, layers=1, sequence_length=5, dropout=0.0, text=False, ease=True), 0, 5,
                    ease_items=3).eval()
    ids = torch.arange(1, 6)  # catalogue row k has id row k + 1
    with torch.no_grad():
        net.ease_index[ids[torch.from_numpy(top)]] = torch.arange(1, 4)
        net.item_item[1:, 1:] = torch.from_numpy(weights).float()
        net.ease_scale.fill_(2.0)
    inputs, targets = torch.tensor([[-1, -1, 0, 3, 1]]), torch.tensor([[-1, -1, -1, -1, 2]])  # history a, d, b
    history = ids[torch.tensor([0, 3, 1])]
    logits, _, _, _ = net(None, ids, inputs, targets)
    vectors, encoder_inputs, bias, _ = net.items(None, ids)
    rows = inputs.clamp(min=0)
    user = net.users(encoder_inputs[rows], None, inputs >= 0, last=True, ease_counts=net.ease_counts([history]))
    torch.testing.assert_close(logits, user @ vectors.T / net.config.temperature + bias, atol=1e-4, rtol=1e-5)
    # the EASE part alone: 2 x (B[a, c] + B[b, c]) for c = every EASE item (d has no EASE row), 0 for d and e
    ease_part = user[:, -4:] @ vectors[:, -4:].T
    expected = 2.0 * (weights[0] + weights[1])
    torch.testing.assert_close(ease_part[0, :3], torch.from_numpy(expected).float(), atol=1e-5, rtol=1e-5)
    assert ease_part[0, 3:].abs().max() == 0


def test_a_hybrid_with_ease_trains_saves_and_loads(split, tiny_backbone, tmp_path):
    model_params, train_params = params(tiny_backbone, ease=True, ease_max_items=50)
    result = train_hybrid(split.train, model_params, train_params.model_copy(update={"max_steps": 10}), tmp_path, progress=False)
    assert result.steps == 10 and np.isfinite(result.losses).all()
    model = Hybrid.load(tmp_path, device="cpu")
    assert model.net.ease_items == 50 and int((model.net.ease_index > 0).sum()) == 50
    assert model.net.item_item.abs().sum() > 0 and model.net.ease_scale.item() != 0.5  # fitted weights, learned scale
    frame = candidate_frame(split.holdout).head(200)
    scores = model.score_frame(frame, split.holdout.items)
    assert np.isfinite(scores).all() and scores.std() > 0


def test_each_click_is_paired_with_the_logged_non_clicks_of_its_own_impression():
    from llmrec.training.hybrid import impression_negatives, timed_sequences, window_impressions

    ts = pd.to_datetime(["2020-01-01", "2020-01-02", "2020-01-03"], utc=True)
    imps = pd.DataFrame({"impression_id": ["1", "2", "3"], "user_id": ["u", "u", "v"], "timestamp": ts,
                         "history": ["a", "a b", ""]})
    inter = pd.DataFrame({"impression_id": ["1", "1", "1", "2", "2", "3"], "user_id": ["u", "u", "u", "u", "u", "v"],
                          "item_id": ["b", "c", "z", "d", "c", "a"], "timestamp": ts[[0, 0, 0, 1, 1, 2]],
                          "label": [1, 0, 0, 1, 0, 1]})
    items = pd.DataFrame({"item_id": list("abcdz"), "title": list("abcdz")})
    mind = Dataset(items, imps, inter, SourceInfo("mind", True, True))
    sequences, times = timed_sequences(mind)
    row = {c: k for k, c in enumerate("abcd")}  # z was never consumed: not in the catalogue
    negatives = impression_negatives(mind, row, seed=0)
    assert sorted(negatives.values()) == [[row["c"]], [row["c"]]]  # b's impression (c, not z) and d's; v's has none
    groups, table = window_impressions(sequences, times, row, 4, negatives)
    windows = sequence_windows(sequences, row, 4)
    assert groups.shape == windows.shape
    by_item = {int(w): int(g) for ws, gs in zip(windows, groups) for w, g in zip(ws, gs) if w != PAD}
    # u: a (explicit history: no impression), b, d; v: a
    assert by_item[row["a"]] == -1
    assert table[by_item[row["b"]]].tolist() == [row["c"]] and table[by_item[row["d"]]].tolist() == [row["c"]]
    assert impression_negatives(Dataset(items, imps, inter[inter["label"] == 1], SourceInfo("movielens", False, False)),
                                row, seed=0) == {}


def test_the_impression_loss_is_the_softmax_over_the_click_and_its_impression_only():
    from llmrec.training.hybrid import impression_cross_entropy

    logits = torch.tensor([[2.0, 0.5, -1.0, 9.0], [0.0, 1.0, 3.0, 9.0]])
    answer = torch.tensor([0, 2])
    negatives = torch.tensor([[1, 2], [0, -1]])  # column 3 is in neither impression
    expected = (-torch.log_softmax(torch.tensor([2.0, 0.5, -1.0]), 0)[0] - torch.log_softmax(torch.tensor([3.0, 0.0]), 0)[0]) / 2
    torch.testing.assert_close(impression_cross_entropy(logits, answer, negatives), expected)


def test_the_impression_loss_teaches_the_ranking_within_impressions(split, tiny_backbone, tmp_path):
    """Trained with a large impression loss, the clicks of the training impressions rank higher among their own
    impressions' candidates than trained without it."""
    frame = candidate_frame(split.train.restrict(split.train.impressions["impression_id"].tail(150)))
    auc = {}
    for weight in (0.0, 5.0):
        model_params, train_params = params(tiny_backbone, impression_loss=weight)
        train_params = train_params.model_copy(update={"max_steps": 120})
        train_hybrid(split.train, model_params, train_params, tmp_path / str(weight), progress=False)
        scores = Hybrid.load(tmp_path / str(weight), device="cpu").score_frame(frame, split.train.items)
        auc[weight] = float(impression_metrics(frame.assign(score=scores), ks=[5])["auc"].mean())
    assert auc[5.0] > auc[0.0] + 0.02, auc


def test_the_sasrec_baseline_is_the_published_model():
    """Item ids, full softmax, nothing of the hybrid's own (a regression: the impression loss reached it once)."""
    from llmrec.config import SasrecParams

    sasrec = SasrecParams().hybrid().experimental
    assert not sasrec.text and sasrec.ids and not (sasrec.ease or sasrec.age or sasrec.zero_shot)
    assert sasrec.impression_loss == 0 and sasrec.id_dropout == 0 and sasrec.cold_hours == 0


def test_new_models_start_their_ids_as_sasrec_does_and_older_ones_load_as_they_were_trained():
    """SASRec's start: small Xavier-normal id rows, fed to the encoder times sqrt(dim). A model saved before
    `sasrec_init` existed (no such key in its config) keeps unit-norm rows fed as they are."""
    from llmrec.config import SasrecParams

    config = HybridConfig.from_params(SasrecParams().hybrid())
    assert config.sasrec_init
    n, d = 500, config.dim
    net = HybridNet(config, 0, n, seed=3)
    rows = net.ids.weight[1:].detach()
    assert abs(float(rows.std()) - (2.0 / (n + 1 + d)) ** 0.5) < 0.005
    _, inputs, _, _ = net.items(None, torch.arange(1, 6))
    assert torch.allclose(inputs, net.ids.weight[1:6] * d ** 0.5)

    older = HybridConfig(**{k: v for k, v in json.loads(json.dumps(config.__dict__)).items() if k != "sasrec_init"})
    assert not older.sasrec_init
    net = HybridNet(older, 0, n, seed=3)
    assert abs(float(net.ids.weight[1:].detach().std()) - d ** -0.5) < 0.02
    _, inputs, _, _ = net.items(None, torch.arange(1, 6))
    assert torch.allclose(inputs, net.ids.weight[1:6])


def test_a_large_catalogue_trains_with_in_batch_negatives_and_says_the_impression_loss_is_off(split, tiny_backbone, tmp_path,
                                                                                               caplog):
    import logging

    model_params, train_params = params(tiny_backbone, full_softmax_max_items=0)
    with caplog.at_level(logging.INFO, logger="llmrec.training.hybrid"):
        result = train_hybrid(split.train, model_params, train_params, tmp_path, progress=False)
    assert np.isfinite(result.losses).all() and np.mean(result.losses[-5:]) < np.mean(result.losses[:5])
    assert "in-batch (log-Q corrected)" in caplog.text and "no impression loss" in caplog.text
    assert np.isfinite(Hybrid.load(tmp_path, device="cpu").score_frame(candidate_frame(split.holdout), split.holdout.items)).all()


def test_padding_is_never_attended_so_its_amount_changes_nothing():
    config = HybridConfig(dim=16, layers=2, heads=2, sequence_length=10, text=False, age=False)
    net = HybridNet(config, 0, n_ids=6, seed=0).eval()
    ids = torch.arange(7)
    history = torch.tensor([3, 1, 4])

    def user(width: int, other: torch.Tensor | None = None) -> torch.Tensor:
        rows = torch.full((1 if other is None else 2, width), -1)
        rows[0, width - 3 :] = history
        if other is not None:
            rows[1] = other
        _, inputs, _, _ = net.items(None, ids)
        with torch.no_grad():
            return net.users(inputs[rows.clamp(min=0)], None, rows >= 0, last=True)[0]

    short = user(4)
    torch.testing.assert_close(user(10), short)  # seven padding positions instead of one
    torch.testing.assert_close(user(10, torch.tensor([1, 2, 3, 4, 5, 6, 1, 2, 3, 4])), short)  # beside a full window


def test_the_fitted_blend_is_judged_on_cases_it_was_not_fitted_on(monkeypatch):
    """A blend scored on the cases it was fitted on looks better than it will on new data, and was kept over a part
    that then ranked the test consumptions better: its quality is cross-fitted (each half scored by the other's fit)."""
    import llmrec.training.blend as blend

    gen = torch.Generator().manual_seed(0)
    cases, candidates = 61, 30
    answers = torch.randint(0, candidates, (cases,), generator=gen)
    real = torch.randn(cases, candidates, generator=gen)
    real[torch.arange(cases), answers] += 1.0
    parts = {"real": real, "noise": 3 * torch.randn(cases, candidates, generator=gen)}
    offsets = torch.zeros(cases, candidates)
    offsets[:, 0] = torch.arange(cases, dtype=torch.float32)  # tags each case (the fit's offset weight is >= 0)
    data = blend._Cases(parts, offsets, torch.ones(cases, candidates, dtype=torch.bool), answers)
    groups = torch.randint(0, 5, (candidates,), generator=gen)
    fitted_on, fit = [], blend._fit

    def recording(subset, *args, **kwargs):
        fitted_on.append(set(subset.offsets[:, 0].long().tolist()))
        return fit(subset, *args, **kwargs)

    monkeypatch.setattr(blend, "_fit", recording)
    at10, full = blend._cross_fitted_quality(data, groups, 5)
    assert len(fitted_on) == 2 and fitted_on[0].isdisjoint(fitted_on[1]) and fitted_on[0] | fitted_on[1] == set(range(cases))
    assert at10.shape == full.shape == (cases,) and bool(((0 <= full) & (full <= 1) & (at10 <= full + 1e-9)).all())
