"""`llmrec recommend --all-users`: every user's top-k from the champion to Parquet, chunked, resumable, tagged."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from llmrec import pipeline, tracking
from llmrec.cli import app
from llmrec.config import load_params

K = 3
SETTINGS = ["data.path=data/synthetic", "batch.chunk_users=20"]


@pytest.fixture
def served(project: Path, tiny_world: Path, tiny_backbone: Path):
    """A project whose champion is a tiny two-tower of the tiny data's period 1 (ingested and versioned)."""
    from llmrec.models.text import TextConfig
    from llmrec.models.two_tower import TwoTower

    shutil.copytree(tiny_world / "period1", project / "data" / "synthetic" / "period1")
    params = load_params("params.yaml", SETTINGS)
    pipeline.run_ingest(params)
    version = pipeline.run_version(params)
    folder = TwoTower.from_backbone(tiny_backbone, TextConfig(max_history=20), 32, str(tiny_backbone), "cpu").save(project / "tt")
    registered = tracking.register_model(folder, Path(params.data.prepared) / "items.parquet", model_name="llmrec",
                                         experiment="batch", params={}, metrics={}, tags={})
    tracking.promote("llmrec", registered.version, "test")
    return params, registered.version, version["dvc_md5"]


def recommend(*args: str) -> str:
    result = CliRunner().invoke(app, [*(a for s in SETTINGS for a in ("--set", s)), "recommend", *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_every_user_gets_k_new_items_tagged_with_model_and_data(served) -> None:
    params, version, md5 = served
    output = recommend("--all-users", "--k", str(K))
    lists = pd.read_parquet(params.batch.out)
    histories = pipeline.load_prepared(params)
    users = set(histories.impressions["user_id"])
    assert f"for {len(users):,} users" in output and f"v{version}, data {md5}" in output
    assert set(lists["user_id"]) == users and len(lists) == K * len(users)
    assert all(ranks == list(range(1, K + 1)) for ranks in lists.groupby("user_id")["rank"].apply(list))
    assert not lists.duplicated(["user_id", "item_id"]).any()
    assert (lists.groupby("user_id")["score"].apply(lambda s: s.is_monotonic_decreasing)).all()
    assert set(lists["model_version"]) == {version} and set(lists["data_version"]) == {md5}
    assert json.loads(pq.read_schema(params.batch.out).metadata[b"llmrec"])["model_version"] == version
    clicked = histories.interactions.query("label == 1").groupby("user_id")["item_id"].agg(set)
    assert not any(item in clicked.get(user, set()) for user, item in zip(lists["user_id"], lists["item_id"]))
    assert not Path(params.batch.out + ".parts").exists()


def test_a_killed_run_resumes_without_duplicates(served, monkeypatch) -> None:
    import llmrec.batch as batch

    params, version, _ = served
    write = batch._write_part
    written = []

    def killed_during_the_third(path: Path, frame: pd.DataFrame) -> None:
        if len(written) == 2:
            path.with_suffix(".tmp").write_bytes(b"PAR1 half a file")  # what a kill mid-write leaves
            raise KeyboardInterrupt
        write(path, frame)
        written.append(path)

    monkeypatch.setattr(batch, "_write_part", killed_during_the_third)
    with pytest.raises(KeyboardInterrupt):
        batch.recommend_all(params, progress=False)
    assert not Path(params.batch.out).exists() and len(written) == 2
    monkeypatch.setattr(batch, "_write_part", write)
    output = recommend("--all-users")
    assert "resumed: 2 of" in output
    resumed = pd.read_parquet(params.batch.out)
    assert not resumed.duplicated(["user_id", "rank"]).any()
    assert resumed.groupby("user_id").size().eq(params.batch.k).all()
    recommend("--all-users", "--out", "outputs/again.parquet")  # the same run, never interrupted: the same lists
    pd.testing.assert_frame_equal(resumed, pd.read_parquet("outputs/again.parquet"))


def test_an_unfinished_run_of_other_settings_is_not_mixed_in(served, monkeypatch) -> None:
    import llmrec.batch as batch

    params, _, _ = served
    write = batch._write_part
    monkeypatch.setattr(batch, "_write_part", lambda path, frame: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        batch.recommend_all(params, progress=False)
    monkeypatch.setattr(batch, "_write_part", write)
    result = CliRunner().invoke(app, [*(a for s in SETTINGS for a in ("--set", s)), "recommend", "--all-users", "--k", "5"])
    assert result.exit_code == 1 and "unfinished run of other settings" in result.output and "--restart" in result.output
    recommend("--all-users", "--k", "5", "--restart")
    assert pd.read_parquet(params.batch.out).groupby("user_id").size().eq(5).all()


def test_a_user_list_and_a_cross_encoder_champion(served, tmp_path: Path, tiny_backbone: Path) -> None:
    from llmrec.models.cross_encoder import CrossEncoder
    from llmrec.models.text import TextConfig

    params, _, _ = served
    some = sorted(set(pipeline.load_prepared(params).impressions["user_id"]))[:4] + ["U-new"]
    (tmp_path / "users.txt").write_text("\n".join(some) + "\n")
    recommend("--users", str(tmp_path / "users.txt"), "--out", "outputs/some.parquet")
    lists = pd.read_parquet("outputs/some.parquet")
    assert list(dict.fromkeys(lists["user_id"])) == some and len(lists) == 5 * params.batch.k  # a new user too
    folder = CrossEncoder.from_backbone(tiny_backbone, TextConfig(), 32, str(tiny_backbone), "cpu").save(tmp_path / "ce")
    registered = tracking.register_model(folder, Path(params.data.prepared) / "items.parquet", model_name="llmrec",
                                         experiment="batch", params={}, metrics={}, tags={})
    tracking.promote("llmrec", registered.version, "test")
    result = CliRunner().invoke(app, [*(a for s in SETTINGS for a in ("--set", s)), "recommend", "--all-users", "--restart"])
    assert result.exit_code == 1 and "cross-encoder" in result.output and "two-tower or hybrid" in result.output


def test_the_lists_replace_a_database_table_and_an_unreachable_one_publishes_on_the_next_run(served, tmp_path, monkeypatch) -> None:
    """SQLite here, PostgreSQL in the production-like stack test: the same SQLAlchemy code."""
    import sqlite3

    from llmrec.batch import DATABASE_URL_ENV

    params, version, md5 = served
    db = tmp_path / "lists.db"
    monkeypatch.setenv(DATABASE_URL_ENV, f"sqlite:///{tmp_path / 'no-such-folder' / 'lists.db'}")
    result = CliRunner().invoke(app, [*(a for s in SETTINGS for a in ("--set", s)), "recommend", "--all-users"])
    assert result.exit_code == 1 and "could not write the lists to table 'recommendations'" in result.output
    assert "run the same command again" in result.output
    assert Path(params.batch.out).is_file() and Path(params.batch.out + ".parts").is_dir()  # scored, kept for the retry

    with sqlite3.connect(db) as conn:  # a table of yesterday's lists, which the new ones replace whole
        conn.execute("CREATE TABLE recommendations (user_id TEXT, item_id TEXT)")
        conn.execute("INSERT INTO recommendations VALUES ('U-old', 'N-old')")
    monkeypatch.setenv(DATABASE_URL_ENV, f"sqlite:///{db}")
    output = recommend("--all-users")
    assert "and table recommendations" in output and "resumed: " in output  # published without scoring again
    lists = pd.read_parquet(params.batch.out)
    with sqlite3.connect(db) as conn:
        table = pd.read_sql("SELECT * FROM recommendations ORDER BY user_id, rank", conn)
        indexes = [row[1] for row in conn.execute("PRAGMA index_list('recommendations')")]
        tables = [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    expected = lists.sort_values(["user_id", "rank"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(table[expected.columns], expected, check_dtype=False)
    assert set(table["model_version"]) == {version} and set(table["data_version"]) == {md5}
    assert indexes == ["recommendations__user_rank"] and tables == ["recommendations"]
    assert not Path(params.batch.out + ".parts").exists()


@pytest.mark.parametrize("kind", ["two-tower", "hybrid"])
def test_the_catalogue_matrix_scores_every_pair_as_the_pair_scorer_does(kind, split, tiny_backbone, tmp_path, one_thread) -> None:
    """Batch recommendations rank by one matrix product; it must give the scores evaluation and serving give."""
    import numpy as np

    from llmrec.config import HybridParams, ModelParams, TrainParams
    from llmrec.data.context import first_seen_hours, hours
    from llmrec.models.ranker import catalogue_scorer, load_ranker, ranker_scorer
    from llmrec.models.text import TextConfig
    from llmrec.models.two_tower import TwoTower

    if kind == "hybrid":
        from llmrec.training.hybrid import train_hybrid

        model = ModelParams(backbone=str(tiny_backbone), max_length=32, hybrid=HybridParams(dim=32, heads=2, layers=1, sequence_length=12))
        train_hybrid(split.train, model, TrainParams(max_steps=5, batch_size=16, device="cpu"), tmp_path / "m", progress=False)
    else:
        TwoTower.from_backbone(tiny_backbone, TextConfig(max_history=20), 32, str(tiny_backbone), "cpu").save(tmp_path / "m")
    ranker = load_ranker(tmp_path / "m", device="cpu")
    items = split.train.items.head(60)
    histories = [" ".join(split.train.items["item_id"].iloc[i : i + 5]) for i in (0, 7, 70)] + [""]
    ages = np.maximum(hours(pd.Series([split.train.impressions["timestamp"].max()]))[0]
                      - items["item_id"].map(first_seen_hours(split.train)).to_numpy(dtype=float), 0)
    matrix = catalogue_scorer(ranker, items)(histories, ages)
    frame = pd.DataFrame({"history": np.repeat(histories, len(items)), "item_id": np.tile(items["item_id"], len(histories)),
                          "age_hours": np.tile(ages, len(histories))})
    pairs = ranker_scorer(ranker, items)(frame).reshape(len(histories), len(items))
    np.testing.assert_allclose(matrix, pairs, rtol=1e-5, atol=1e-5)
