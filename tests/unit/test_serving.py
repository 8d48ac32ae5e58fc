"""`llmrec serve`: the HTTP API over a real tiny registry, raw texts, request checks, alias following and hot swaps."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from llmrec import tracking
from llmrec.config import ServeLimits
from llmrec.serving import create_app

CE, TT = "m", "tt"  # model names in the shared registry: cross-encoder and two-tower


@pytest.fixture
def env(serving_registry, monkeypatch):
    monkeypatch.chdir(serving_registry.root)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return serving_registry


def client_for(reg, alias: str, model: str = CE, limits: ServeLimits | None = None) -> TestClient:
    # poll_seconds is long: tests call holder.refresh() themselves instead of sleeping
    return TestClient(create_app(model, alias=alias, poll_seconds=3600, root=reg.root, device="cpu", limits=limits))


@contextmanager
def served(reg, model: str, alias: str, version: str | None = None, limits: ServeLimits | None = None) -> Iterator[TestClient]:
    """A started client whose holder has loaded `model@alias` (set to `version`, default the first)."""
    tracking.set_alias(model, alias, version or reg.versions[model][0], root=reg.root)
    with client_for(reg, alias, model, limits) as client:
        client.app.state.holder.refresh()
        yield client


def same(a: float, b: float) -> bool:
    """Equal up to float32 noise (the tiny untrained cross-encoder's scores are ~1e-4, its differences ~1e-5)."""
    return a == pytest.approx(b, rel=1e-5, abs=1e-9)


def raw(reg, item_id: str, with_id: bool = False) -> dict:
    """The raw-text form of a catalogue item: what a client sends for an item the catalogue does not know."""
    row = pd.read_parquet(reg.items).set_index("item_id").loc[item_id]
    entry = {"text": row["title"], "category": row["category"], "subcategory": row["subcategory"]}
    return {"item_id": f"new-{item_id}", **entry} if with_id else entry


def test_recommend_ranks_top_k_with_version(env):
    reg = env
    v1 = reg.versions[CE][0]
    ids = reg.ids
    with served(reg, CE, "serve-a") as client:
        body = {"history": ["N1", "N2", "N3"], "candidates": ids[10:20] + ["N11"], "k": 4}
        r = client.post("/recommend", json=body)
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["model"] == {"name": CE, "version": v1, "alias": "serve-a"}
        ranked = out["items"]
        assert [x["rank"] for x in ranked] == [1, 2, 3, 4]
        scores = [x["score"] for x in ranked]
        assert scores == sorted(scores, reverse=True)
        assert len({x["item_id"] for x in ranked}) == 4 and {x["item_id"] for x in ranked} <= set(ids[10:20])

        # the same scores as the shared offline scorer (same text rendering as training / evaluation)
        from llmrec.evaluation.evaluate import model_scorer
        from llmrec.models.cross_encoder import CrossEncoder

        folder = tracking.download_model_dir(CE, v1, reg.root / "check-ce", root=reg.root)
        frame = pd.DataFrame({"history": "N1 N2 N3", "item_id": ids[10:20]})
        offline = model_scorer(CrossEncoder.load(folder, device="cpu"), pd.read_parquet(reg.items), 64)(frame)
        expected = dict(zip(ids[10:20], offline))
        assert all(same(x["score"], float(expected[x["item_id"]])) for x in ranked)

        # k larger than the (deduplicated) candidates: all of them; no history is fine
        r = client.post("/recommend", json={"candidates": ["N5", "N6", "N5"], "k": 100})
        assert r.status_code == 200 and sorted(x["item_id"] for x in r.json()["items"]) == ["N5", "N6"]

        info = client.get("/model").json()
        assert info["version"] == v1 and info["alias"] == "serve-a" and info["run_id"]
        assert info["data"] == {"dvc_md5": "md5-1", "git_revision": "rev1"}
        assert info["trained_at"] == "2019-11-14T00:00:00" and info["loaded_at"]

        spec = client.get("/openapi.json").json()
        assert spec["info"]["title"] == "llmrec" and "/recommend" in spec["paths"]


@pytest.mark.parametrize("model", [CE, TT])
def test_raw_texts_score_exactly_like_the_catalogue_items_they_render(env, model):
    """A history entry or candidate sent as text scores as the catalogue item whose text it is, for both model types."""
    reg = env
    ids = reg.ids
    with served(reg, model, f"serve-raw-{model}") as client:
        def scores(body: dict) -> dict[str, float]:
            r = client.post("/recommend", json={"k": 100, **body})
            assert r.status_code == 200, r.text
            return {x["item_id"]: x["score"] for x in r.json()["items"]}

        candidates = ids[20:30]
        by_id = scores({"history": ["N1", "N2", "N3", "N4"], "candidates": candidates})
        as_text = scores({"history": ["N1", raw(reg, "N2"), "N3", raw(reg, "N4")], "candidates": candidates})
        assert by_id.keys() == as_text.keys() == set(candidates)
        assert all(same(as_text[i], by_id[i]) for i in candidates)

        # candidates as texts: answered under the id the client chose, with the score of the item they render
        mixed = scores({"history": ["N1", "N2", "N3", "N4"], "candidates": ["N21", raw(reg, "N22", with_id=True)]})
        assert set(mixed) == {"N21", "new-N22"}
        assert same(mixed["new-N22"], by_id["N22"])

        # the raw text counts: as the newest history entry it changes the user, hence the scores
        other = scores({"history": ["N1", "N2", "N3", {"text": "esports final draws a record crowd", "category": "sports"}],
                        "candidates": candidates})
        assert not all(same(other[i], by_id[i]) for i in candidates)
        # without a category the text alone is the item: a different rendering, a different score
        plain = scores({"history": ["N1", "N2", "N3", {"text": raw(reg, "N4")["text"]}], "candidates": candidates})
        assert not all(same(plain[i], by_id[i]) for i in candidates)

        # served scores equal the offline scorer that evaluation uses (ids, through ranker_scorer)
        from llmrec.models.ranker import load_ranker, ranker_scorer

        folder = tracking.download_model_dir(model, reg.versions[model][0], reg.root / f"check-{model}", root=reg.root)
        frame = pd.DataFrame({"history": "N1 N2 N3 N4", "item_id": candidates})
        offline = ranker_scorer(load_ranker(folder, device="cpu"), pd.read_parquet(reg.items))(frame)
        assert all(same(by_id[item], float(score)) for item, score in zip(candidates, offline))


def test_two_tower_ranks_the_catalogue_for_a_raw_text_history(env):
    reg = env
    with served(reg, TT, "serve-cat") as client:
        history = ["N1", "N2", raw(reg, "N3")]
        r = client.post("/recommend", json={"history": history, "k": 100})
        assert r.status_code == 200, r.text
        top = [x["item_id"] for x in r.json()["items"]]
        assert len(top) == 100 and not {"N1", "N2"} & set(top)  # history ids are never recommended
        assert set(top) <= set(reg.ids)
        # a cold-start user (no history) gets the catalogue ranked by the learned "no history" vector
        cold = client.post("/recommend", json={"k": 3})
        assert cold.status_code == 200 and len(cold.json()["items"]) == 3


def test_bad_requests_are_4xx_with_a_message_never_500(env):
    reg = env
    with served(reg, CE, "serve-b") as client:
        r = client.post("/recommend", json={"history": ["N1", "X9"], "candidates": ["N2", "Y1", "Y2", "Y1"]})
        assert r.status_code == 422
        detail = r.json()["detail"]
        assert detail["unknown"] == {"history": ["X9"], "candidates": ["Y1", "Y2"]}
        assert "history: X9" in detail["message"] and "candidates: Y1, Y2" in detail["message"]
        assert "raw texts" in detail["message"]  # says how to send items the catalogue does not know

        many = [f"Z{i}" for i in range(30)]
        detail = client.post("/recommend", json={"candidates": many}).json()["detail"]
        assert len(detail["unknown"]["candidates"]) == 20 and "(and 10 more)" in detail["message"]

        huge = "x" * 5000
        bad = {
            "empty candidates": {"candidates": []},
            "too many candidates": {"candidates": ["N1"] * 301},
            "history too long": {"candidates": ["N1"], "history": ["N1"] * 51},
            "k zero": {"candidates": ["N1"], "k": 0},
            "k over max_k": {"candidates": ["N1"], "k": 101},
            "k a word": {"candidates": ["N1"], "k": "ten"},
            "k a numeric string": {"candidates": ["N1"], "k": "10"},
            "k a float": {"candidates": ["N1"], "k": 1.5},
            "k a bool": {"candidates": ["N1"], "k": True},
            "candidates a string": {"candidates": "N1"},
            "ids not strings": {"candidates": [1, 2]},
            "id with a space": {"candidates": ["N1 N2"]},
            "id with a control space": {"candidates": ["N1\x1cN2"]},
            "empty id": {"candidates": [""]},
            "unknown field": {"candidates": ["N1"], "extra": 1},
            "not an object": [],
            "history entry a number": {"candidates": ["N1"], "history": [5]},
            "history text empty": {"candidates": ["N1"], "history": [{"text": ""}]},
            "history text blank": {"candidates": ["N1"], "history": [{"text": " \t\x1f "}]},
            "history text huge": {"candidates": ["N1"], "history": [{"text": huge}]},
            "history text not a string": {"candidates": ["N1"], "history": [{"text": ["a"]}]},
            "history text unknown field": {"candidates": ["N1"], "history": [{"text": "a", "title": "b"}]},
            "category too long": {"candidates": ["N1"], "history": [{"text": "a", "category": "c" * 101}]},
            "candidate text without id": {"candidates": [{"text": "a"}]},
            "candidate text with a bad id": {"candidates": [{"item_id": "a b", "text": "a"}]},
        }
        for what, body in bad.items():
            r = client.post("/recommend", json=body)
            assert r.status_code == 422, what
            detail = r.json()["detail"]
            assert detail["message"].startswith("invalid request") and detail["errors"], what
            assert huge not in r.text, what  # a huge input is never echoed back
        detail = client.post("/recommend", json=bad["k over max_k"]).json()["detail"]
        assert "k: Input should be less than or equal to 100" in detail["message"]
        assert detail["errors"][0]["loc"] == ["body", "k"]

        no_list = client.post("/recommend", json={"history": ["N1"]}).json()["detail"]
        assert "pair scorer" in no_list["message"] and "send `candidates`" in no_list["message"]

        not_json = client.post("/recommend", content=b"{not json", headers={"content-type": "application/json"})
        assert not_json.status_code == 422 and "JSON decode error" in not_json.json()["detail"]["message"]
        # a lone surrogate is valid JSON but not text: refused, and the answer is still valid UTF-8 JSON
        surrogate = client.post("/recommend", content=b'{"candidates": ["N1"], "history": [{"text": "a\\ud800"}]}',
                                headers={"content-type": "application/json"})
        assert surrogate.status_code == 422 and surrogate.json()["detail"]["message"]
        odd_key = client.post("/recommend", content=b'{"candidates": ["N1"], "\\udc00' + b"k" * 500 + b'": 1}',
                              headers={"content-type": "application/json"})
        assert odd_key.status_code == 422 and len(odd_key.content) < 2000
        wrong_type = client.post("/recommend", content=b"candidates=N1", headers={"content-type": "text/plain"})
        assert wrong_type.status_code == 422

        # bodies over serve.limits.max_body_bytes: 413 from the declared length, and while streaming without one
        big = json.dumps({"candidates": ["N1"], "history": [{"text": "y" * 1000}] * 1100}).encode()
        r = client.post("/recommend", content=big, headers={"content-type": "application/json"})
        assert r.status_code == 413 and "max_body_bytes" in r.json()["detail"]["message"]
        r = client.post("/recommend", content=iter([big[i : i + 65536] for i in range(0, len(big), 65536)]),
                        headers={"content-type": "application/json"})
        assert r.status_code == 413 and "max_body_bytes" in r.json()["detail"]["message"]
        assert client.get("/nowhere").json() == {"detail": {"message": "Not Found"}}


def test_limits_are_settings_and_the_schema_states_them(env):
    from llmrec.config import load_params

    params = load_params(env.root / "none.yaml", ["serve.limits.max_candidates=5", "serve.limits.max_text_chars=20"])
    limits = params.serve.limits.model_copy(update={"max_history": 2, "max_k": 3, "max_body_bytes": 2048})
    assert limits.max_candidates == 5 and ServeLimits().max_candidates == 300  # defaults as in params.yaml
    with served(env, CE, "serve-limits", limits=limits) as client:
        schema = client.get("/openapi.json").json()["components"]["schemas"]
        request = schema["RecommendRequest"]["properties"]
        assert request["candidates"]["anyOf"][0]["maxItems"] == 5 and request["history"]["maxItems"] == 2
        assert request["k"]["maximum"] == 3 and request["k"]["default"] == 3
        assert schema["HistoryText"]["properties"]["text"]["maxLength"] == 20

        ok = {"history": ["N1", {"text": "t" * 20}], "candidates": ["N1", "N2", "N3", "N4", {"item_id": "x", "text": "t"}], "k": 3}
        assert client.post("/recommend", json=ok).status_code == 200
        for key, value in {"candidates": ok["candidates"] + ["N5"], "history": ok["history"] + ["N3"], "k": 4}.items():
            r = client.post("/recommend", json={**ok, key: value})
            assert r.status_code == 422 and key in r.json()["detail"]["message"], key
        r = client.post("/recommend", json={**ok, "history": ["N1", {"text": "t" * 21}]})
        assert r.status_code == 422 and "at most 20 characters" in r.json()["detail"]["message"]
        r = client.post("/recommend", json={**ok, "history": [{"text": "t" * 20}, {"text": "u" * 20}], "padding": "p" * 2000})
        assert r.status_code == 413


def test_health_is_503_until_a_champion_exists(env):
    reg = env
    v1 = reg.versions[CE][0]
    with client_for(reg, tracking.CHAMPION) as client:
        holder = client.app.state.holder
        assert holder.refresh() is False
        r = client.get("/health")
        assert r.status_code == 503 and "champion" in r.json()["detail"]
        assert client.get("/model").status_code == 503
        assert client.post("/recommend", json={"candidates": ["N1"]}).status_code == 503

        tracking.promote(CE, v1, "first", root=reg.root)
        assert holder.refresh() is True
        r = client.get("/health")
        assert r.status_code == 200 and r.json()["status"] == "ok" and r.json()["model_version"] == v1


def test_follows_alias_and_keeps_old_model_when_a_load_fails(env, monkeypatch, caplog):
    reg = env
    v1, v2 = reg.versions[CE]
    with served(reg, CE, "serve-c") as client:
        holder = client.app.state.holder
        assert client.get("/model").json()["version"] == v1

        tracking.set_alias(CE, "serve-c", v2, root=reg.root)
        assert holder.refresh() is True
        info = client.get("/model").json()
        assert info["version"] == v2 and info["data"]["dvc_md5"] == "md5-2"
        assert client.post("/recommend", json={"candidates": ["N1", "N2"]}).json()["model"]["version"] == v2
        assert holder.refresh() is False  # no move, no reload

        tracking.set_alias(CE, "serve-c", v1, root=reg.root)  # rollback: the previous version is still in memory
        assert holder.refresh() is True and client.get("/model").json()["version"] == v1

        def broken(info):
            raise RuntimeError("disk full")

        monkeypatch.setattr(holder, "_load", broken)
        tracking.set_alias(CE, "serve-c", v2, root=reg.root)
        holder._previous = None  # force a real load of v2
        with caplog.at_level(logging.ERROR, logger="llmrec.serving"):
            assert holder.refresh() is False
        assert "disk full" in caplog.text
        assert client.get("/model").json()["version"] == v1
        health = client.get("/health").json()
        assert health["status"] == "ok" and health["model_version"] == v1 and "disk full" in health["last_error"]


def test_requests_during_a_swap_all_succeed(env):
    reg = env
    v1, v2 = reg.versions[CE]
    with served(reg, CE, "serve-d") as client:
        holder = client.app.state.holder
        statuses, versions, errors = [], set(), []
        stop = threading.Event()

        def hammer():
            try:
                while not stop.is_set():
                    r = client.post("/recommend", json={"history": ["N1", {"text": "a raw headline"}], "candidates": reg.ids[:20], "k": 5})
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
                tracking.set_alias(CE, "serve-d", version, root=reg.root)
                holder._previous = None  # make every swap a full download + load
                assert holder.refresh() is True
                wait_for_more(3)
        finally:
            stop.set()
            for t in threads:
                t.join(30)
        assert not errors and statuses and set(statuses) == {200}
        assert versions == {v1, v2} and client.get("/model").json()["version"] == v2


@pytest.mark.parametrize("kind", ["two-tower", "cross-encoder"])
def test_after_a_rollback_items_added_since_are_scored_by_their_text(kind, tmp_path, monkeypatch, tiny_backbone):
    """A rollback to a version trained before some items existed answered 422 for them (929 of 2,000 requests in a
    load test); a model that scores by text can score any catalogue item that has text."""
    from llmrec.models.cross_encoder import CrossEncoder
    from llmrec.models.text import TextConfig
    from llmrec.models.two_tower import TwoTower

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    model_class = TwoTower if kind == "two-tower" else CrossEncoder
    folder = model_class.from_backbone(tiny_backbone, TextConfig(), 32, str(tiny_backbone), "cpu").save(tmp_path / "model")
    catalogue = pd.DataFrame({"item_id": [f"N{i}" for i in range(1, 41)], "title": [f"story {i} about things" for i in range(1, 41)],
                              "text": "", "category": "news", "subcategory": "world"})
    for version, n_items in ((1, 20), (2, 40)):  # version 2 learned from 20 items more
        catalogue.head(n_items).to_parquet(tmp_path / f"items{version}.parquet")
        registered = tracking.register_model(folder, tmp_path / f"items{version}.parquet", model_name="grown", experiment="e",
                                             params={}, metrics={}, tags={}, root=tmp_path)
        tracking.promote("grown", registered.version, "test", root=tmp_path)
    body = {"history": ["N1", "N30"], "candidates": ["N2", "N25", "N39"], "k": 2}
    with TestClient(create_app("grown", poll_seconds=3600, root=tmp_path, device="cpu")) as client:
        holder = client.app.state.holder
        holder.refresh()
        assert client.post("/recommend", json=body).status_code == 200
        tracking.rollback("grown", root=tmp_path)
        assert holder.refresh() and client.get("/model").json()["version"] == "1"
        reply = client.post("/recommend", json=body)
        assert reply.status_code == 200, reply.text
        assert client.get("/model").json()["catalogue"] == {"items": 40, "added": 20, "newest_version": "2"}
        unknown = client.post("/recommend", json={**body, "candidates": ["N2", "N99"]})
        assert unknown.status_code == 422 and unknown.json()["detail"]["unknown"] == {"candidates": ["N99"]}
    with TestClient(create_app("grown", poll_seconds=3600, root=tmp_path, device="cpu")) as client:  # a fresh start on v1
        client.app.state.holder.refresh()
        reply = client.post("/recommend", json=body)
        assert reply.status_code == 200 and reply.json()["model"]["version"] == "1", reply.text
        if kind == "two-tower":  # the whole catalogue includes the added items
            whole = client.post("/recommend", json={"history": ["N1"], "k": 40})
            assert {item["item_id"] for item in whole.json()["items"]} >= {"N25", "N39"}
