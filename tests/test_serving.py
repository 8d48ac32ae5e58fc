"""`llmrec serve`: the HTTP API over a real tiny registry, alias following and hot swaps."""

from __future__ import annotations

import logging
import threading

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from llmrec import tracking
from llmrec.serving import create_app

ITEMS = [f"N{i}" for i in range(1, 121)]
MODEL = "m"


@pytest.fixture(scope="module")
def registry(tmp_path_factory, tiny_backbone):
    """A registry with two versions of a tiny model (each test follows its own alias, so tests stay independent)."""
    from llmrec.models.cross_encoder import CrossEncoder
    from llmrec.models.text import TextConfig

    root = tmp_path_factory.mktemp("serving")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        model_dir = CrossEncoder.from_backbone(tiny_backbone, TextConfig(max_history=3), 32, str(tiny_backbone), "cpu").save(root / "model")
        items = root / "items.parquet"
        pd.DataFrame(
            {
                "item_id": ITEMS,
                "title": [f"story number {i} about things" for i in range(len(ITEMS))],
                "text": "",
                "category": ["news", "sports", "finance"] * (len(ITEMS) // 3),
                "subcategory": "world",
            }
        ).to_parquet(items)
        versions = [
            tracking.register_model(
                model_dir, items, model_name=MODEL, experiment="e", params={"p": i}, metrics={"ndcg@10": 0.1 * i},
                tags={"data.dvc_md5": f"md5-{i}", "data.git_revision": f"rev{i}", "data.train_end": "2019-11-14T00:00:00"},
                root=root,
            ).version
            for i in (1, 2)
        ]
        yield root, versions


@pytest.fixture
def env(registry, monkeypatch):
    root, _ = registry
    monkeypatch.chdir(root)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return registry


def client_for(root, alias: str) -> TestClient:
    # poll_seconds is long: tests call holder.refresh() themselves instead of sleeping
    return TestClient(create_app(MODEL, alias=alias, poll_seconds=3600, root=root, device="cpu"))


def test_recommend_ranks_top_k_with_version(env):
    root, (v1, _) = env
    tracking.set_alias(MODEL, "serve-a", v1, root=root)
    with client_for(root, "serve-a") as client:
        client.app.state.holder.refresh()
        body = {"history": ["N1", "N2", "N3"], "candidates": ITEMS[10:20] + ["N11"], "k": 4}
        r = client.post("/recommend", json=body)
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["model"] == {"name": MODEL, "version": v1, "alias": "serve-a"}
        ranked = out["items"]
        assert [x["rank"] for x in ranked] == [1, 2, 3, 4]
        scores = [x["score"] for x in ranked]
        assert scores == sorted(scores, reverse=True)
        assert len({x["item_id"] for x in ranked}) == 4 and {x["item_id"] for x in ranked} <= set(ITEMS[10:20])

        # the same scores as the shared offline scorer (same text rendering as training / evaluation)
        from llmrec.evaluation.evaluate import model_scorer
        from llmrec.models.cross_encoder import CrossEncoder

        folder = tracking.download_model_dir(MODEL, v1, root / "check", root=root)
        frame = pd.DataFrame({"history": "N1 N2 N3", "item_id": ITEMS[10:20]})
        offline = model_scorer(CrossEncoder.load(folder, device="cpu"), pd.read_parquet(root / "items.parquet"), 64)(frame)
        expected = dict(zip(ITEMS[10:20], offline))
        for x in ranked:
            assert x["score"] == pytest.approx(float(expected[x["item_id"]]), abs=1e-5)

        # k larger than the (deduplicated) candidates: all of them; no history is fine
        r = client.post("/recommend", json={"candidates": ["N5", "N6", "N5"], "k": 300})
        assert r.status_code == 200 and sorted(x["item_id"] for x in r.json()["items"]) == ["N5", "N6"]

        info = client.get("/model").json()
        assert info["version"] == v1 and info["alias"] == "serve-a" and info["run_id"]
        assert info["data"] == {"dvc_md5": "md5-1", "git_revision": "rev1"}
        assert info["trained_at"] == "2019-11-14T00:00:00" and info["loaded_at"]

        spec = client.get("/openapi.json").json()
        assert spec["info"]["title"] == "llmrec" and "/recommend" in spec["paths"]


def test_bad_requests_are_422_never_500(env):
    root, (v1, _) = env
    tracking.set_alias(MODEL, "serve-b", v1, root=root)
    with client_for(root, "serve-b") as client:
        client.app.state.holder.refresh()
        r = client.post("/recommend", json={"history": ["N1", "X9"], "candidates": ["N2", "Y1", "Y2", "Y1"]})
        assert r.status_code == 422
        detail = r.json()["detail"]
        assert detail["unknown"] == {"history": ["X9"], "candidates": ["Y1", "Y2"]}
        assert "history: X9" in detail["message"] and "candidates: Y1, Y2" in detail["message"]

        many = [f"Z{i}" for i in range(30)]
        detail = client.post("/recommend", json={"candidates": many}).json()["detail"]
        assert len(detail["unknown"]["candidates"]) == 20 and "(and 10 more)" in detail["message"]

        bad = [
            {"candidates": []},
            {"history": ["N1"]},
            {"candidates": ["N1"] * 301},
            {"candidates": ["N1"], "history": ["N1"] * 51},
            {"candidates": ["N1"], "k": 0},
            {"candidates": ["N1"], "k": 301},
            {"candidates": ["N1"], "k": "ten"},
            {"candidates": "N1"},
            {"candidates": [1, 2]},
            {"candidates": ["N1 N2"]},
            {"candidates": [""]},
            {"candidates": ["N1"], "extra": 1},
            [],
        ]
        for body in bad:
            assert client.post("/recommend", json=body).status_code == 422, body
        no_list = client.post("/recommend", json={"history": ["N1"]}).json()["detail"]
        assert "pair scorer" in no_list["message"] and "send `candidates`" in no_list["message"]
        assert client.post("/recommend", content=b"{not json", headers={"content-type": "application/json"}).status_code == 422


def test_health_is_503_until_a_champion_exists(env):
    root, (v1, _) = env
    with client_for(root, tracking.CHAMPION) as client:
        holder = client.app.state.holder
        assert holder.refresh() is False
        r = client.get("/health")
        assert r.status_code == 503 and "champion" in r.json()["detail"]
        assert client.get("/model").status_code == 503
        assert client.post("/recommend", json={"candidates": ["N1"]}).status_code == 503

        tracking.promote(MODEL, v1, "first", root=root)
        assert holder.refresh() is True
        r = client.get("/health")
        assert r.status_code == 200 and r.json()["status"] == "ok" and r.json()["model_version"] == v1


def test_follows_alias_and_keeps_old_model_when_a_load_fails(env, monkeypatch, caplog):
    root, (v1, v2) = env
    tracking.set_alias(MODEL, "serve-c", v1, root=root)
    with client_for(root, "serve-c") as client:
        holder = client.app.state.holder
        holder.refresh()
        assert client.get("/model").json()["version"] == v1

        tracking.set_alias(MODEL, "serve-c", v2, root=root)
        assert holder.refresh() is True
        info = client.get("/model").json()
        assert info["version"] == v2 and info["data"]["dvc_md5"] == "md5-2"
        assert client.post("/recommend", json={"candidates": ["N1", "N2"]}).json()["model"]["version"] == v2
        assert holder.refresh() is False  # no move, no reload

        tracking.set_alias(MODEL, "serve-c", v1, root=root)  # rollback: the previous version is still in memory
        assert holder.refresh() is True and client.get("/model").json()["version"] == v1

        def broken(info):
            raise RuntimeError("disk full")

        monkeypatch.setattr(holder, "_load", broken)
        tracking.set_alias(MODEL, "serve-c", v2, root=root)
        holder._previous = None  # force a real load of v2
        with caplog.at_level(logging.ERROR, logger="llmrec.serving"):
            assert holder.refresh() is False
        assert "disk full" in caplog.text
        assert client.get("/model").json()["version"] == v1
        health = client.get("/health").json()
        assert health["status"] == "ok" and health["model_version"] == v1 and "disk full" in health["last_error"]


def test_requests_during_a_swap_all_succeed(env):
    root, (v1, v2) = env
    tracking.set_alias(MODEL, "serve-d", v1, root=root)
    with client_for(root, "serve-d") as client:
        holder = client.app.state.holder
        holder.refresh()
        statuses, versions, errors = [], set(), []
        stop = threading.Event()

        def hammer():
            try:
                while not stop.is_set():
                    r = client.post("/recommend", json={"history": ["N1"], "candidates": ITEMS[:20], "k": 5})
                    statuses.append(r.status_code)
                    versions.add(r.json()["model"]["version"])
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=hammer) for _ in range(3)]
        for t in threads:
            t.start()
        def wait_for_more(n: int) -> None:
            seen = len(statuses)
            for _ in range(600):
                if len(statuses) >= seen + n or errors:
                    return
                stop.wait(0.05)

        try:
            wait_for_more(3)
            for version in (v2, v1, v2):
                tracking.set_alias(MODEL, "serve-d", version, root=root)
                holder._previous = None  # make every swap a full download + load
                assert holder.refresh() is True
                wait_for_more(3)
        finally:
            stop.set()
            for t in threads:
                t.join(30)
        assert not errors and statuses and set(statuses) == {200}
        assert versions == {v1, v2} and client.get("/model").json()["version"] == v2
