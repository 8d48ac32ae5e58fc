"""`llmrec benchmark`: the standard protocol (leave-last-out, sampled and full ranking), resumable model by model."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from llmrec.config import Params
from llmrec.evaluation import benchmark as bm

TINY = {"n_items": 400, "n_users": 150, "days_per_period": 4, "impressions_per_day": 120}


@pytest.fixture(scope="module")
def movielens(tmp_path_factory):
    """The tiny generator's world as an ml-latest folder, and the dataset llmrec reads from it."""
    from llmrec.config import SyntheticSize
    from llmrec.data.ingest import load_source
    from llmrec.data.synthetic import generate

    folder = tmp_path_factory.mktemp("ml") / "ml-tiny"
    generate(folder, SyntheticSize(**TINY), seed=3, format="movielens")
    return folder, load_source(folder).dataset


@pytest.fixture(scope="module")
def split(movielens):
    return bm.standard_split(movielens[1], bm.StandardProtocol())


def small_params() -> Params:
    return Params.model_validate({"eval": {"sasrec": {"dim": 16, "layers": 1, "heads": 1, "sequence_length": 20,
                                                      "max_epochs": 4, "patience": 2, "batch_size": 16}}})


def test_split_is_leave_last_out_on_users_with_enough_consumptions(movielens, split):
    _, dataset = movielens
    events = bm.consumption_events(dataset)
    counts = events["user_id"].value_counts()
    assert set(split.users) == set(counts[counts >= 5].index)
    for k, user in enumerate(split.users[:20]):
        mine = events.loc[events["user_id"] == user, "item_id"].tolist()
        assert split.catalogue[split.test[k]] == mine[-1]
        assert split.histories["train+val"][k] == mine[:-1] and split.histories["train-only"][k] == mine[:-2]
    assert len(split.train.interactions) == len(split.train_val.interactions) - len(split.users)


def test_negatives_are_distinct_and_never_consumed_by_the_user(movielens, split):
    events = bm.consumption_events(movielens[1])
    own = events.groupby("user_id")["item_id"].agg(set)
    assert split.negatives.shape == (len(split.users), 99)
    for k, user in enumerate(split.users):
        drawn = set(split.catalogue[split.negatives[k]])
        assert len(drawn) == 99 and not drawn & own[user]


def test_same_seed_same_negatives_and_another_seed_others(movielens, split):
    again = bm.standard_split(movielens[1], bm.StandardProtocol())
    other = bm.standard_split(movielens[1], bm.StandardProtocol(seed=14))
    assert (again.negatives == split.negatives).all() and again.digest == split.digest
    assert (other.negatives != split.negatives).any() and other.digest != split.digest


def test_full_ranking_excludes_every_earlier_consumption_and_sampled_never_sees_them(split):
    consumed = [set(c.tolist()) for c in split.consumed]

    def history_first(rows: np.ndarray) -> np.ndarray:  # every earlier consumption above the test item, the rest below
        scores = np.zeros((len(rows), len(split.catalogue)))
        for k, u in enumerate(rows):
            scores[k, list(consumed[u])] = 2.0
            scores[k, split.test[u]] = 1.0
        return scores

    per = bm.per_user_metrics(split, history_first, (1, 10))
    assert (per["full"]["hr@1"] == 1.0).all() and (per["sampled"]["hr@1"] == 1.0).all()
    assert max(len(c) for c in consumed) > 50  # longer than any history window a model reads


def test_ties_count_in_expectation(split):
    per = bm.per_user_metrics(split, lambda rows: np.zeros((len(rows), len(split.catalogue))), (10,))
    np.testing.assert_allclose(per["sampled"]["hr@10"], 0.1)  # 100 tied candidates
    candidates = np.array([len(split.catalogue) - len(set(c.tolist()) - {t}) for c, t in zip(split.consumed, split.test)])
    np.testing.assert_allclose(per["full"]["hr@10"], 10 / candidates)


def test_same_seed_gives_the_same_leaderboard_and_a_resumed_run_the_same_table(movielens, tmp_path, caplog):
    import logging

    caplog.set_level(logging.INFO)
    _, dataset = movielens
    names = ["popularity", "ease", "sasrec"]
    first = bm.run_benchmark(dataset, names, tmp_path / "a", small_params(), bm.StandardProtocol(), progress=False)
    fresh = bm.run_benchmark(dataset, names, tmp_path / "b", small_params(), bm.StandardProtocol(), progress=False)
    assert first["tables"] == fresh["tables"] and first["paired"] == fresh["paired"]
    (tmp_path / "a" / "models" / "ease.json").unlink()  # as if the run had stopped while fitting EASE
    caplog.clear()
    resumed = bm.run_benchmark(dataset, names, tmp_path / "a", small_params(), bm.StandardProtocol(), progress=False)
    assert "popularity: done earlier" in caplog.text and "sasrec: done earlier" in caplog.text
    assert "ease: fitting" in caplog.text
    assert resumed["tables"] == first["tables"]
    board = json.loads((tmp_path / "a" / "leaderboard.json").read_text())
    assert set(board["tables"]) == {"train-only", "train+val"} and set(board["tables"]["train-only"]) == {"sampled", "full"}
    assert "l2" in board["models"]["ease"]["setting"]
    assert any(why in board["models"]["sasrec"]["setting"] for why in ("early stopping", "completed"))
    markdown = (tmp_path / "a" / "leaderboard.md").read_text()
    assert "## train-only histories, full ranking" in markdown
    assert "ease − popularity" in markdown or "popularity − ease" in markdown
    assert (tmp_path / "a" / "leaderboard.png").stat().st_size > 1000


def test_changed_settings_refit_the_model(movielens, tmp_path):
    _, dataset = movielens
    bm.run_benchmark(dataset, ["popularity"], tmp_path, small_params(), bm.StandardProtocol(), progress=False)
    before = json.loads((tmp_path / "models" / "popularity.json").read_text())["digest"]
    bm.run_benchmark(dataset, ["popularity"], tmp_path, small_params(), bm.StandardProtocol(negatives=50), progress=False)
    assert json.loads((tmp_path / "models" / "popularity.json").read_text())["digest"] != before


def test_ease_beats_popularity_and_random_on_a_log_with_collaborative_structure(movielens, tmp_path):
    board = bm.run_benchmark(movielens[1], ["random", "popularity", "ease"], tmp_path, small_params(), bm.StandardProtocol(),
                             progress=False)
    sampled = board["tables"]["train+val"]["sampled"]
    assert sampled["random"]["hr@10"]["mean"] == pytest.approx(0.1, abs=0.06)
    assert sampled["ease"]["ndcg@10"]["mean"] > sampled["random"]["ndcg@10"]["mean"]


def test_cli_writes_the_leaderboard(movielens, tmp_path):
    from typer.testing import CliRunner

    from llmrec.cli import app

    folder, _ = movielens
    result = CliRunner().invoke(app, ["benchmark", str(folder), "--model", "popularity,random", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "## train-only histories, sampled ranking" in result.output
    assert {p.name for p in tmp_path.iterdir()} >= {"leaderboard.md", "leaderboard.json", "leaderboard.png", "models"}
    bad = CliRunner().invoke(app, ["benchmark", str(folder), "--model", "bm25", "--out", str(tmp_path)])
    assert bad.exit_code == 1 and "unknown benchmark model" in bad.output


def test_users_below_min_events_are_left_out(movielens):
    _, dataset = movielens
    split = bm.standard_split(dataset, bm.StandardProtocol(min_events=30))
    counts = bm.consumption_events(dataset)["user_id"].value_counts()
    assert len(split.users) == int((counts >= 30).sum()) < len(counts)
    assert isinstance(split.users, pd.Index)
