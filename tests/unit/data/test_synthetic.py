"""The synthetic MIND generator: determinism, exact MIND format, no leakage, a real period shift, learnability.

The files are parsed here with plain Python, independently of the project's own readers.
"""

from __future__ import annotations

import datetime
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.metrics import roc_auc_score

from llmrec.config import SyntheticSize
from llmrec.data.synthetic import generate
from llmrec.errors import ConfigError

TINY = SyntheticSize(n_items=400, n_users=150, days_per_period=4, impressions_per_day=120)
SEED = 2026
START = datetime.date(2019, 11, 9)
MIND_TIME = re.compile(r"^(1[0-2]|[1-9])/([1-9]|[12]\d|3[01])/20\d\d (1[0-2]|[1-9]):[0-5]\d:[0-5]\d (AM|PM)$")
NEWS_ID, USER_ID, SHOWN = re.compile(r"^N\d+$"), re.compile(r"^U\d+$"), re.compile(r"^N\d+-[01]$")
FILES = ("news.tsv", "behaviors.tsv")


def read_period(folder: Path) -> dict:
    """news: id -> 8 columns; rows: (impression id, user, time, history, [(item, label)])."""
    news_lines = (folder / "news.tsv").read_text(encoding="utf-8").split("\n")
    behavior_lines = (folder / "behaviors.tsv").read_text(encoding="utf-8").split("\n")
    assert news_lines[-1] == "" and behavior_lines[-1] == "", "files end with one newline"
    news_cols = [line.split("\t") for line in news_lines[:-1]]
    rows, raw = [], [line.split("\t") for line in behavior_lines[:-1]]
    for cols in raw:
        assert len(cols) == 5, cols
        shown = [(tok.rsplit("-", 1)[0], int(tok[-1])) for tok in cols[4].split(" ")]
        when = datetime.datetime.strptime(cols[2], "%m/%d/%Y %I:%M:%S %p")
        rows.append((int(cols[0]), cols[1], when, cols[3].split(" ") if cols[3] else [], shown))
    return {"news_cols": news_cols, "news": {c[0]: c for c in news_cols}, "raw": raw, "rows": rows}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[int, dict]:
    folders = generate(tmp_path_factory.mktemp("synthetic"), TINY, SEED)
    return {k: read_period(folder) for k, folder in zip((1, 2), folders)}


def _bytes(folder: Path) -> list[bytes]:
    return [(folder / name).read_bytes() for name in FILES]


def test_same_seed_gives_identical_bytes_and_periods_are_independent_of_the_request(tmp_path: Path) -> None:
    a = generate(tmp_path / "a", TINY, seed=7)
    b = generate(tmp_path / "b", TINY, seed=7)
    c = generate(tmp_path / "c", TINY, seed=8)
    only2 = generate(tmp_path / "d", TINY, seed=7, periods=(2,))
    assert a == [tmp_path / "a" / "period1", tmp_path / "a" / "period2"]
    assert only2 == [tmp_path / "d" / "period2"]
    assert [_bytes(f) for f in a] == [_bytes(f) for f in b]
    assert _bytes(a[0])[1] != _bytes(c[0])[1] and _bytes(a[1])[0] != _bytes(c[1])[0]
    assert _bytes(only2[0]) == _bytes(a[1])
    assert not (tmp_path / "d" / "period1").exists()


def test_unknown_periods_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="periods"):
        generate(tmp_path, TINY, seed=1, periods=(3,))
    with pytest.raises(ConfigError):
        generate(tmp_path, TINY, seed=1, periods=())


@pytest.mark.parametrize("period", [1, 2])
def test_news_tsv_has_the_mind_layout(data: dict, period: int) -> None:
    cols = data[period]["news_cols"]
    ids = [c[0] for c in cols]
    assert ids == sorted(ids, key=lambda x: int(x[1:])) == sorted(ids) and len(set(ids)) == len(ids)
    for c in cols:
        assert len(c) == 8, c
        news_id, cat, sub, title, abstract, url, title_ents, abstract_ents = c
        assert NEWS_ID.match(news_id) and re.fullmatch(r"[a-z]+", cat) and re.fullmatch(r"[a-z_-]+", sub)
        assert title.strip() and "\r" not in title + abstract and url.startswith("https://")
        for text, ents in ((title, json.loads(title_ents)), (abstract, json.loads(abstract_ents))):
            assert isinstance(ents, list)
            for e in ents:
                assert set(e) == {"Label", "Type", "WikidataId", "Confidence", "OccurrenceOffsets", "SurfaceForms"}
                assert e["Type"] in {"P", "O", "G"} and re.fullmatch(r"Q\d+", e["WikidataId"])
                off = e["OccurrenceOffsets"][0]
                assert text[off:off + len(e["Label"])] == e["Label"]
    empty_abstracts = np.mean([c[4] == "" for c in cols])
    assert 0.0 < empty_abstracts < 0.12
    assert np.mean([c[6] != "[]" for c in cols]) > 0.4  # most titles name an entity
    assert len({c[1] for c in cols}) >= 12 and len({c[2] for c in cols}) >= 36


@pytest.mark.parametrize("period", [1, 2])
def test_behaviors_tsv_has_the_mind_layout(data: dict, period: int) -> None:
    d = data[period]
    first_day = START + datetime.timedelta(days=(period - 1) * TINY.days_per_period)
    last_day = first_day + datetime.timedelta(days=TINY.days_per_period - 1)
    referenced = set()
    for cols, (_, user, when, history, shown) in zip(d["raw"], d["rows"]):
        assert MIND_TIME.match(cols[2]), cols[2]
        assert first_day <= when.date() <= last_day
        assert USER_ID.match(user) and all(NEWS_ID.match(h) for h in history)
        assert all(SHOWN.match(tok) for tok in cols[4].split(" "))
        items = [i for i, _ in shown]
        assert len(set(items)) == len(items) and 10 <= len(items) <= 50
        assert sum(y for _, y in shown) >= 1, "every MIND impression has a click"
        assert not set(items) & set(history), "nothing already read is shown again"
        referenced.update(history, items)
    assert referenced == set(d["news"]), "news.tsv lists exactly the referenced items"
    times = [r[2] for r in d["rows"]]
    assert times == sorted(times) and len(d["rows"]) == TINY.impressions_per_day * TINY.days_per_period


def test_impression_ids_count_up_with_time_across_periods(data: dict) -> None:
    rows = data[1]["rows"] + data[2]["rows"]
    ids, times = [r[0] for r in rows], [r[2] for r in rows]
    assert ids == list(range(1, len(rows) + 1))
    assert all(a < b for a, b in zip(times, times[1:]))


def test_click_statistics_look_like_mind(data: dict) -> None:
    rows = data[1]["rows"] + data[2]["rows"]
    shown = sum(len(r[4]) for r in rows)
    clicks = sum(y for r in rows for _, y in r[4])
    assert 0.03 < clicks / shown < 0.07
    assert 1.1 < clicks / len(rows) < 2.5
    assert 0.0 < np.mean([not r[3] for r in rows]) < 0.06  # a few cold-start impressions
    assert 10 < np.mean([len(r[3]) for r in rows]) < 40
    per_user = Counter(r[1] for r in rows)
    assert max(per_user.values()) >= 5 * np.median(list(per_user.values())), "activity is skewed"


def test_histories_hold_only_earlier_clicks_most_recent_last(data: dict) -> None:
    last: dict[str, tuple[list[str], list[str]]] = {}  # user -> (history, clicks) of their previous impression
    for _, user, _, history, shown in data[1]["rows"] + data[2]["rows"]:
        assert len(history) <= 50
        if user in last:
            prev_history, prev_clicks = last[user]
            assert history == (prev_history + prev_clicks)[-50:]
        last[user] = (history, [i for i, y in shown if y == 1])


def _click_mix(d: dict) -> Counter:
    return Counter(d["news"][i][1] for r in d["rows"] for i, y in r[4] if y == 1)


def test_period_two_shifts(data: dict) -> None:
    mix1, mix2 = _click_mix(data[1]), _click_mix(data[2])
    cats = set(mix1) | set(mix2)
    tvd = 0.5 * sum(abs(mix1[c] / sum(mix1.values()) - mix2[c] / sum(mix2.values())) for c in cats)
    assert tvd > 0.25
    assert "esports" not in {c[1] for c in data[1]["news_cols"]}
    assert mix2["esports"] / sum(mix2.values()) > 0.12, "the emerging topic becomes popular"
    shown1 = {i for r in data[1]["rows"] for i, _ in r[4]}
    shown2 = [i for r in data[2]["rows"] for i, _ in r[4]]
    new_share = np.mean([i not in data[1]["news"] for i in shown2])
    assert 0.5 < new_share < 0.95, "mostly new items, some older ones still shown"
    assert shown1 & set(shown2)
    users1, users2 = {r[1] for r in data[1]["rows"]}, {r[1] for r in data[2]["rows"]}
    assert len(users1 & users2) > 0.4 * len(users2) and users2 - users1
    mean_cands = [np.mean([len(r[4]) for r in data[k]["rows"]]) for k in (1, 2)]
    assert mean_cands[1] > mean_cands[0] + 3


def _content_auc(vectorizer: TfidfVectorizer, d: dict) -> float:
    """Mean per-impression AUC of cosine(mean TF-IDF of the history, candidate)."""
    ids = list(d["news"])
    pos = {i: k for k, i in enumerate(ids)}
    x = vectorizer.transform([d["news"][i][3] + " " + d["news"][i][4] for i in ids])
    aucs = []
    for _, _, _, history, shown in d["rows"]:
        labels = [y for _, y in shown]
        if history and 0 < sum(labels) < len(labels):
            profile = np.asarray(x[[pos[h] for h in history]].mean(axis=0)).ravel()
            aucs.append(roc_auc_score(labels, x[[pos[i] for i, _ in shown]] @ profile))
    return float(np.mean(aucs))


def _popularity_auc(clicks: Counter, d: dict) -> float:
    """Mean per-impression AUC of 'clicks the item got in the training period'."""
    aucs = [roc_auc_score([y for _, y in r[4]], [clicks[i] for i, _ in r[4]])
            for r in d["rows"] if 0 < sum(y for _, y in r[4]) < len(r[4])]
    return float(np.mean(aucs))


def test_text_carries_preferences_and_a_period_one_model_degrades(data: dict) -> None:
    # corpus stop words (max_df) removed, so template and filler words do not dominate the cosine
    vectorizer = TfidfVectorizer(stop_words="english", max_df=0.1)
    vectorizer.fit([c[3] + " " + c[4] for c in data[1]["news_cols"]])
    auc1, auc2 = _content_auc(vectorizer, data[1]), _content_auc(vectorizer, data[2])
    assert auc1 > 0.68, "a text model learns the users' preferences"
    assert auc2 < auc1 - 0.05, "the period-1 model degrades on period 2"
    popular = Counter(i for r in data[1]["rows"] for i, y in r[4] if y == 1)
    assert _popularity_auc(popular, data[1]) > 0.55 > 0.5 > _popularity_auc(popular, data[2])


def test_the_collaborative_knob_is_the_latent_share_of_the_affinity(tmp_path: Path) -> None:
    """`collaborative` = c: the latent (text-invisible) match carries share c of the affinity's variance,
    the text part 1 - c, and the affinity keeps its mean; clicks per impression stay about the same."""
    from llmrec.data import synthetic as S

    rng = np.random.default_rng(0)
    cats = list(S.TOPICS)
    sub_cat = np.array([cats.index(c) for c in cats for _ in S.TOPICS[c][3]])
    ent_cat = np.array([e[3] for e in S.entities(rng, cats)])
    items = S._items(rng, TINY, cats, sub_cat, ent_cat)
    users = S._users(rng, 300, cats, sub_cat, ent_cat)
    text = np.concatenate([S._affinity(users, items, 0, u, np.arange(400)) for u in range(300)])
    S._latent(rng, users, items, 0.8)
    mixed = np.concatenate([S._affinity(users, items, 0, u, np.arange(400)) for u in range(300)])
    latent = np.concatenate([items["latent"] @ users["latent"][u] for u in range(300)])
    assert np.corrcoef(mixed, latent)[0, 1] ** 2 == pytest.approx(0.8 * S.TEXT_AFFINITY[1] ** 2 / mixed.var(), rel=0.1)
    assert np.corrcoef(mixed, text)[0, 1] ** 2 == pytest.approx(0.2 * text.var() / mixed.var(), rel=0.1)
    assert mixed.mean() == pytest.approx(text.mean(), abs=0.1)
    with pytest.raises(ConfigError, match="collaborative"):
        S._latent(rng, users, items, 1.5)
    rate = lambda w: np.mean([labels.mean() for *_, labels in w.impressions])  # noqa: E731
    plain, with_latent = S.build_world(TINY, SEED, 0.0), S.build_world(TINY, SEED, 0.8)
    assert abs(rate(plain) - rate(with_latent)) < 0.25 * rate(plain)


def test_movielens_format_is_a_positive_only_catalogue_log_the_loader_reads(tmp_path: Path) -> None:
    import csv

    from llmrec.data.ingest import load_source

    (folder,) = generate(tmp_path / "ml", TINY, SEED, (1, 2), collaborative=0.5, format="movielens")
    with open(folder / "ratings.csv", encoding="utf-8") as f:
        ratings = list(csv.DictReader(f))
    with open(folder / "movies.csv", encoding="utf-8") as f:
        movies = {row["movieId"]: row for row in csv.DictReader(f)}
    assert ratings and set(ratings[0]) == {"userId", "movieId", "rating", "timestamp"}
    assert {r["movieId"] for r in ratings} == set(movies)  # every rated movie is described, no more
    assert all(re.fullmatch(r".+ \(\d{4}\)", m["title"]) and m["genres"].count("|") == 1 for m in movies.values())
    per_user = Counter(r["userId"] for r in ratings)
    assert min(per_user.values()) >= 1 and np.median(list(per_user.values())) >= 3
    # a catalogue world: the same movie is consumed across the whole log, not only within a few days
    times = {}
    for r in ratings:
        times.setdefault(r["movieId"], []).append(int(r["timestamp"]))
    spans = [max(t) - min(t) for t in times.values() if len(t) >= 3]
    assert np.median(spans) > 4 * 86400
    dataset = load_source(folder).dataset
    assert dataset.source.format == "ml-latest" and not dataset.source.logged_negatives
    assert len(dataset.interactions) == len(ratings)
    with pytest.raises(ConfigError, match="format"):
        generate(tmp_path / "x", TINY, SEED, format="parquet")


# --- sequence signal (`sequential`) -----------------------------------------------------------------


def _files(folder: Path) -> dict[str, str]:
    """md5 of every file under `folder`, by relative path."""
    import hashlib

    return {str(p.relative_to(folder)): hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


# the tiny worlds as written before `sequential` existed: 0 must keep writing exactly these
KNOB_ZERO_MD5 = {
    "mind": {"period1/behaviors.tsv": "908b897a2931a3a56b60fb54feca1971", "period1/news.tsv": "e74f9bbb37ac0f75028b88fb6dc5202d",
             "period2/behaviors.tsv": "5021177e673efe266771735ecd9dba1b", "period2/news.tsv": "94c0ee1426a80171f097620a01c424ac"},
    "movielens": {"movies.csv": "4a5cef3f394b32241c33de26ac5750ba", "ratings.csv": "7807eeb04514ac25dccd167684beca32"},
}


@pytest.mark.parametrize("fmt", ["mind", "movielens"])
def test_sequential_zero_writes_the_worlds_written_before_the_knob(tmp_path: Path, fmt: str) -> None:
    generate(tmp_path / "a", TINY, SEED, collaborative=0.8, format=fmt, sequential=0.0)
    assert _files(tmp_path / "a") == KNOB_ZERO_MD5[fmt]


@pytest.mark.parametrize("fmt", ["mind", "movielens"])
def test_sequential_worlds_are_deterministic(tmp_path: Path, fmt: str) -> None:
    a = _files(generate(tmp_path / "a", TINY, 7, collaborative=0.8, format=fmt, sequential=0.5)[0])
    b = _files(generate(tmp_path / "b", TINY, 7, collaborative=0.8, format=fmt, sequential=0.5)[0])
    c = _files(generate(tmp_path / "c", TINY, 8, collaborative=0.8, format=fmt, sequential=0.5)[0])
    off = _files(generate(tmp_path / "d", TINY, 7, collaborative=0.8, format=fmt)[0])
    assert a == b and a != c and a != off


def test_sequential_outside_zero_to_one_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="sequential"):
        generate(tmp_path, TINY, SEED, format="movielens", sequential=1.5)


def _sequences(world) -> dict[int, list[int]]:
    """Each user's consumptions in order: the warm-up, then the clicks of every impression as listed."""
    out: dict[int, list[int]] = {}
    for _, u, _, history, cands, labels in world.impressions:
        out.setdefault(u, list(history)).extend(int(i) for i in cands[labels == 1])
    return out


def _successor_rates(world) -> tuple[float, float]:
    """(share of consecutive consumptions where the second is a successor of the first: its next instalment or a
    follow-up; the same share when the first is replaced by the user's consumption 6+ steps before the second)."""
    t = world.transitions
    is_next = lambda a, b: t.next[a] == b or b in t.follow[a][t.weight[a] > 0]  # noqa: E731
    pairs, far = [], []
    for seq in _sequences(world).values():
        pairs += [is_next(a, b) for a, b in zip(seq, seq[1:])]
        far += [is_next(a, b) for a, b in zip(seq, seq[6:])]
    return float(np.mean(pairs)), float(np.mean(far))


# twice TINY's users and impressions: the knob's effects at 0.25 are small beside a tiny world's noise
SEQUENCE_WORLD = SyntheticSize(n_items=400, n_users=300, days_per_period=4, impressions_per_day=240)


@pytest.fixture(scope="module")
def sequential_worlds() -> dict[float, object]:
    from llmrec.data.synthetic import build_world

    return {k: build_world(SEQUENCE_WORLD, SEED, 0.8, catalogue=True, sequential=k) for k in (0.25, 0.5, 1.0)}


def test_the_next_consumption_follows_the_previous_one_more_with_a_stronger_knob(sequential_worlds: dict) -> None:
    rates = {k: _successor_rates(w) for k, w in sequential_worlds.items()}
    for k, (next_rate, far_rate) in rates.items():
        chance = 4 / SEQUENCE_WORLD.n_items  # a next instalment + FOLLOW_UPS follow-ups out of the catalogue
        assert next_rate > 3 * chance and next_rate > 2 * far_rate, (k, next_rate, far_rate)
    assert rates[0.25][0] < rates[0.5][0] < rates[1.0][0]


def test_recent_consumptions_predict_the_next_one_better_than_early_ones(sequential_worlds: dict) -> None:
    """The category of a user's next consumption matches their recent ones more than their early ones (taste drifts,
    series and follow-ups follow each other), and more so with a stronger knob (each world has its own catalogue,
    so only the gap is compared)."""
    def gap(world) -> float:
        cats = np.array([row.split("\t")[0] for row in world.news_rows])
        recent, early = [], []
        for seq in _sequences(world).values():
            for k in range(20, len(seq)):
                recent.append(np.mean(cats[seq[k - 5:k]] == cats[seq[k]]))
                early.append(np.mean(cats[seq[:5]] == cats[seq[k]]))
        return float(np.mean(recent) - np.mean(early))

    gaps = {k: gap(w) for k, w in sequential_worlds.items()}
    assert gaps[1.0] > 0.03 and gaps[1.0] > gaps[0.5] > gaps[0.25], gaps


def test_series_share_their_first_instalment_s_title_category_and_come_in_order(tmp_path: Path) -> None:
    import csv

    (folder,) = generate(tmp_path / "ml", TINY, SEED, collaborative=0.8, format="movielens", sequential=0.5)
    with open(folder / "movies.csv", encoding="utf-8") as f:
        movies = {row["movieId"]: row for row in csv.DictReader(f)}
    with open(folder / "ratings.csv", encoding="utf-8") as f:
        ratings = list(csv.DictReader(f))
    title = {m: re.fullmatch(r"(.+) \((\d{4})\)", row["title"]) for m, row in movies.items()}
    stems = {m: t.group(1) for m, t in title.items()}
    sequels = {}  # sequel id -> first instalment id: a title that extends another one's title
    by_stem = {stem: m for m, stem in stems.items()}
    for m, stem in stems.items():
        for cut in (" ", ": "):
            head = stem.rsplit(cut, 1)[0] if cut in stem else None
            while head and head not in by_stem and cut in head:
                head = head.rsplit(cut, 1)[0]
            if head in by_stem and by_stem[head] != m:
                sequels[m] = by_stem[head]
    assert len(sequels) > 0.1 * len(movies), "a good share of the movies are sequels"
    for sequel, first in sequels.items():
        assert movies[sequel]["genres"] == movies[first]["genres"]
        assert int(title[sequel].group(2)) >= int(title[first].group(2)), "a sequel comes out after its first instalment"
    when: dict[tuple[str, str], int] = {}
    per_user: dict[str, list[int]] = {}
    for r in ratings:
        when[(r["userId"], r["movieId"])] = int(r["timestamp"])
        per_user.setdefault(r["userId"], []).append(int(r["timestamp"]))
    assert all(len(set(t)) == len(t) for t in per_user.values()), "one second per rating: the order survives sorting"
    both = [(when[(u, f)], when[(u, s)]) for s, f in sequels.items() for u in per_user if (u, f) in when and (u, s) in when]
    # a sequel that comes out during the log is often watched new, before its first part is caught up on
    assert len(both) > 30 and np.mean([a < b for a, b in both]) > 0.7, "first instalments are mostly watched first"


def test_sequential_histories_hold_only_earlier_clicks_and_the_loader_reads_the_log(tmp_path: Path) -> None:
    from llmrec.data.ingest import load_source

    folders = generate(tmp_path / "mind", TINY, SEED, collaborative=0.8, sequential=1.0)
    rows = read_period(folders[0])["rows"] + read_period(folders[1])["rows"]
    last: dict[str, tuple[list[str], list[str]]] = {}
    for _, user, _, history, shown in rows:
        assert not {i for i, _ in shown} & set(history)
        if user in last:
            assert history == (last[user][0] + last[user][1])[-50:]
        last[user] = (history, [i for i, y in shown if y == 1])
    (folder,) = generate(tmp_path / "ml", TINY, SEED, collaborative=0.8, format="movielens", sequential=1.0)
    dataset = load_source(folder).dataset
    assert dataset.source.format == "ml-latest" and len(dataset.items) == dataset.interactions["item_id"].nunique()
    per_user = dataset.interactions.groupby("user_id")["timestamp"]
    assert (per_user.nunique() == per_user.size()).all(), "one second per rating"


def test_a_movie_catalogue_releases_movies_during_the_log_that_are_watched_most_when_new(
        tmp_path: Path, sequential_worlds: dict) -> None:
    """With `sequential`, some of a catalogue's movies come out during the log: nobody consumes one before it is
    out, it is consumed most in its first days, movies.csv dates it in the log's year, and a stronger knob makes
    its first days stand out more (what a user consumed lately then tells what is new now, as on real movie logs)."""
    import csv

    from llmrec.data.synthetic import build_world

    log_days = 2 * SEQUENCE_WORLD.days_per_period

    def first_days_lift(world) -> float:
        """New releases' consumptions per item-day in their first 2 days out over those in their later days."""
        out = world.published
        new = out >= 0
        assert 0.05 < new.mean() < 0.3, "a share of the catalogue comes out during the log"
        early = late = 0
        for _, _, t, _, cands, labels in world.impressions:
            clicked = cands[labels == 1]
            assert (out[clicked] <= t).all(), "nothing is consumed before it comes out"
            age = t - out[clicked[new[clicked]]]
            early, late = early + int((age < 2).sum()), late + int((age >= 2).sum())
        first_days = np.minimum(out[new] + 2, log_days) - out[new]
        return (early / first_days.sum()) / (late / (log_days - out[new] - first_days).sum())

    lift = {k: first_days_lift(w) for k, w in sequential_worlds.items()}
    assert lift[1.0] > 2.0 and lift[1.0] > lift[0.25], lift

    world = build_world(TINY, SEED, 0.8, catalogue=True, sequential=0.5)
    (folder,) = generate(tmp_path / "ml", TINY, SEED, collaborative=0.8, format="movielens", sequential=0.5)
    ids = {int(n[1:]): k for k, n in enumerate(world.news_ids)}
    start = datetime.datetime.combine(START, datetime.time(), tzinfo=datetime.timezone.utc).timestamp()
    with open(folder / "ratings.csv", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            out = world.published[ids[int(r["movieId"])]]
            assert out < 0 or int(r["timestamp"]) >= start + out * 86400, ("rated before it came out", r)
    with open(folder / "movies.csv", encoding="utf-8") as f:
        years = {ids[int(r["movieId"])]: int(r["title"][-5:-1]) for r in csv.DictReader(f)}
    assert all(years[k] == START.year for k in years if world.published[k] >= 0), "released this year"
