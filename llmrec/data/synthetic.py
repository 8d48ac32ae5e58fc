"""Deterministic generator of a MIND-format news recommendation dataset with a period shift.

Generative model (the whole world is built from the seed, then the requested periods are written):
  * ~12 categories with 3-5 subcategories; every item draws its title and abstract from templates
    filled with real English category/subcategory words, generic filler words and named entities
    of its category. Items are published at a time of day, stay fresh for ~1-3 days (a few
    "evergreen" ones for longer) and have a log-normal base popularity.
  * Users have sparse Dirichlet category preferences, per-category subcategory preferences, a few
    favourite entities and a skewed activity; each one starts with a warm-up history of archive
    items drawn from those preferences.
  * An impression shows 10-50 fresh candidates (a mix of popular and uniformly drawn items); a click
    is Bernoulli(sigmoid(bias + affinity + popularity + noise)), with at least one click each.
    Histories are the warm-up plus earlier clicks (most recent last, 50 at most).
  * Collaborative structure (`collaborative`, 0..1): every user and item also has a latent factor
    vector (`LATENT_DIM`) that no text shows; the affinity mixes the text-visible part (category,
    subcategory, entities) with the latent match u . v so that the latent part carries the share
    `collaborative` of the affinity's variance (mean and spread stay as they are). Users with similar factors co-consume the same items, which
    collaborative filters (EASE, ItemKNN, item-id embeddings) can learn for items with history and
    no text model can. 0 = preferences are fully visible in the text.
  * Period 2 shifts: a share of users move preference mass to other categories, an emerging
    category (`esports`) is published and liked by many users, weather/news items are published
    more, clicks lean a bit more on popularity and impressions show more candidates. Users and
    items carry over (returning users, items published late in period 1 or "evergreen").
The items' words and news.tsv rows are written by `synthetic_text`; the sequence structure of `sequential`
(series, follow-ups, a catalogue's new releases) is `synthetic_sequence`'s, its taste drift is here.

Why one module this long: the world the seed builds (catalogue, users, their drift, every impression) and its
two writers (MIND, MovieLens) share one random-stream order, which keeps a seed's data byte-identical; its
text and sequence structure are separate modules.
"""

from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from llmrec.config import SyntheticSize
from llmrec.data.synthetic_sequence import (
    RECENT,
    Transitions,
    boost,
    join_latent,
    name_series,
    release_ages,
    release_dates,
    transitions,
)
from llmrec.data.synthetic_text import EMERGING, TOPICS, entities, news_rows
from llmrec.errors import ConfigError

log = logging.getLogger(__name__)

N_PERIODS = 2
MAX_HISTORY = 50
EMERGING_SUPPLY = 0.15                 # its share of the items published in period 2
EMERGING_BOOST = 0.4                   # added to its items' log-popularity
MOVERS, MOVE_WEIGHT = 0.6, 0.9         # share of users whose period-2 preferences move, weight of the new ones
FANS, FAN_WEIGHT, OTHERS_WEIGHT = 0.4, (0.2, 0.5), 0.06  # esports fans and the mass users give it
CLICK = ((2.0, 2.0, 0.2, 0.5), (1.8, 1.8, 0.35, 0.5))  # click logit: bias, affinity, log-popularity, noise sd
CANDIDATES = (28, 36)                  # median candidates per impression in each period
ARCHIVE, EMPTY_WARMUP = 0.3, 0.1       # share of items published before period 1, share of empty warm-ups
LATENT_DIM = 8                         # latent (text-invisible) factors per user and item
TEXT_AFFINITY = (-3.36, 0.9)           # mean and spread (within an impression) of the text affinity of candidates:
                                       # the mix keeps both, so `collaborative` is the latent share of the variance

# taste drift of `sequential` (0..1; absent at 0)
DRIFT_DAYS = 6.0                       # correlation time of a user's taste (at 1; longer below)
CATEGORY_DRIFT = 0.8                   # stationary spread of the drift of a user's log category preferences
WARMUP_DAYS = 4.0                      # the pre-log history drifts over this many days


# period, user, time (days since start), history, candidates, click labels
Impression = tuple[int, int, float, tuple[int, ...], np.ndarray, np.ndarray]


@dataclass
class World:
    """Everything the seed determines, ready to be written: news rows, ids and all impressions in time order."""

    news_ids: list[str]
    news_rows: list[str]  # news.tsv columns 2-8 of every item, tab-joined
    user_ids: list[str]
    impressions: list[Impression]
    release_age: np.ndarray | None = None  # years before the log each item came out (None: drawn when written)
    transitions: "Transitions | None" = None  # the sequence structure (`sequential`); an impression's clicks are
                                              # then listed in the order they were consumed
    published: np.ndarray | None = None  # the day each item came out (days since the log's start; < 0: before it)


def _fixed_width_ids(rng: np.random.Generator, prefix: str, n: int) -> list[str]:
    """n distinct ids like N12345 with equal digit counts (so text order == numeric order)."""
    base = 10 ** max(4, len(str(n)))
    return [f"{prefix}{x}" for x in base + rng.choice(9 * base, size=n, replace=False)]


def _zipf(k: int) -> np.ndarray:
    """Zipf weights 1/rank over k ranks, normalised."""
    w = 1.0 / np.arange(1, k + 1)
    return w / w.sum()


def _items(rng: np.random.Generator, size: SyntheticSize, cats: list[str], sub_cat: np.ndarray,
           ent_cat: np.ndarray, catalogue: bool = False) -> dict[str, np.ndarray]:
    """Category, subcategory, entity (len(ent_cat) = none), publish day, popularity and freshness of items.

    `catalogue`: every item exists before the log starts and never goes stale (a movie catalogue, not news)."""
    n, days = size.n_items, size.days_per_period
    n_arch = n if catalogue else max(int(ARCHIVE * n), 20)
    pub = np.concatenate([rng.uniform(-10, 0, n_arch), np.sort(rng.uniform(0, N_PERIODS * days, n - n_arch))])
    supply = np.array([TOPICS[c][0] for c in cats])
    later = supply * np.where(np.isin(cats, ["weather", "news"]), 1.6, 1.0)  # winter storms, news cycle
    later[cats.index(EMERGING)] = EMERGING_SUPPLY * later.sum()
    period2 = pub >= days
    cat = np.empty(n, dtype=int)
    cat[~period2] = rng.choice(len(cats), int((~period2).sum()), p=supply / supply.sum())
    cat[period2] = rng.choice(len(cats), int(period2.sum()), p=later / later.sum())
    sub = np.array([rng.choice(np.flatnonzero(sub_cat == c)) for c in cat])
    ent = np.array([rng.choice(np.flatnonzero(ent_cat == c), p=_zipf(int((ent_cat == c).sum())))
                    if rng.random() < 0.65 else len(ent_cat) for c in cat])
    evergreen = rng.random(n) < 0.06
    logpop = rng.normal(0, 1, n) + EMERGING_BOOST * (cat == cats.index(EMERGING))
    tau, window = np.where(evergreen, 5.0, rng.uniform(0.6, 1.4, n)), np.where(evergreen, 12.0, 3.0)
    if catalogue:
        tau, window = np.full(n, np.inf), np.full(n, np.inf)
    return {"cat": cat, "sub": sub, "ent": ent, "pub": pub, "logpop": logpop, "tau": tau, "window": window}


def _users(rng: np.random.Generator, n: int, cats: list[str], sub_cat: np.ndarray, ent_cat: np.ndarray) -> dict:
    """Per-period category preferences and favourite entities, subcategory preferences and activity."""
    n_cat, emerging = len(cats), cats.index(EMERGING)
    supply = np.array([TOPICS[c][0] for c in cats])
    pref1 = 0.85 * rng.dirichlet(np.full(n_cat, 0.2), n) + 0.15 * supply / supply.sum()
    pref1[:, emerging] = 0.0
    pref1 /= pref1.sum(1, keepdims=True)
    pref2 = pref1.copy()
    movers = rng.random(n) < MOVERS
    fresh = rng.dirichlet(np.full(n_cat, 0.2), int(movers.sum()))
    pref2[movers] = (1 - MOVE_WEIGHT) * pref1[movers] + MOVE_WEIGHT * fresh
    fan = np.where(rng.random(n) < FANS, rng.uniform(*FAN_WEIGHT, n), OTHERS_WEIGHT)[:, None]
    pref2 = (1 - fan) * pref2 + fan * np.eye(n_cat)[emerging]
    sub = np.zeros((n, len(sub_cat)))
    for c in range(n_cat):
        cols = np.flatnonzero(sub_cat == c)
        sub[:, cols] = rng.dirichlet(np.full(len(cols), 0.5), n)
    fav = np.zeros((N_PERIODS, n, len(ent_cat) + 1), dtype=bool)  # last column: "no entity"
    ent_pop = np.concatenate([_zipf(int((ent_cat == c).sum())) for c in range(n_cat)])
    for u in range(n):
        for period, pref in enumerate((pref1[u], pref2[u])):
            w = pref[ent_cat] * ent_pop
            fav[period:, u, rng.choice(len(ent_cat), 2, replace=False, p=w / w.sum())] = True
    active = np.stack([rng.random(n) < 0.8, np.zeros(n, dtype=bool)])
    active[1] = ~active[0] | (rng.random(n) < 0.75)  # returning users plus the ones new in period 2
    act = rng.lognormal(0, 1.1, n) * active
    return {"pref": np.stack([pref1, pref2]), "sub": sub, "fav": fav, "act": act / act.sum(1, keepdims=True)}


def _latent(rng: np.random.Generator, users: dict, items: dict, collaborative: float) -> None:
    """Attach latent factors (unit-variance dot products) and the mixing weight to users and items."""
    if not 0.0 <= collaborative <= 1.0:
        raise ConfigError(f"synthetic.collaborative must be in [0, 1], got {collaborative}", fix="e.g. 0.5")
    users["latent"] = rng.normal(0, 1, (users["sub"].shape[0], LATENT_DIM)) / LATENT_DIM ** 0.25
    items["latent"] = rng.normal(0, 1, (len(items["pub"]), LATENT_DIM)) / LATENT_DIM ** 0.25
    users["collaborative"] = collaborative


def _drift(rng: np.random.Generator, users: dict, us: np.ndarray, days: np.ndarray, strength: float) -> None:
    """Move the taste of users `us` on by `days` each: an Ornstein-Uhlenbeck step (correlation time DRIFT_DAYS /
    strength) of the latent factors (same stationary spread as drawn) and of a shift of the log category
    preferences."""
    keep = np.exp(-strength * np.maximum(days, 0.0) / DRIFT_DAYS)[:, None]
    fresh = np.sqrt(1 - keep ** 2)
    if "latent" in users:
        users["latent"][us] = keep * users["latent"][us] + fresh * rng.normal(0, LATENT_DIM ** -0.25, (len(us), LATENT_DIM))
    shift = users["category_shift"]
    shift[us] = keep * shift[us] + fresh * rng.normal(0, CATEGORY_DRIFT, (len(us), shift.shape[1]))


def _sequential_warmup(rng: np.random.Generator, users: dict, items: dict, trans: Transitions,
                       block: int = 256) -> list[list[int]]:
    """Pre-log histories drawn one archive item at a time, oldest first: the taste drifts over WARMUP_DAYS and
    each pick is pulled by the ones before it (as `_warmup` otherwise); `block` users draw together."""
    archive = np.flatnonzero(items["pub"] < 0)
    n_users = users["sub"].shape[0]
    lengths = np.zeros(n_users, dtype=int)
    for u in range(n_users):
        if rng.random() >= EMPTY_WARMUP:
            lengths[u] = int(np.clip(rng.lognormal(2.2, 0.8), 1, min(MAX_HISTORY, len(archive))))
    out: list[list[int]] = [[] for _ in range(n_users)]
    for a in range(0, n_users, block):
        us = np.arange(a, min(a + block, n_users))
        text = np.stack([_text_affinity(users, items, 0, int(u), archive) for u in us])  # the part that does not drift
        seen = np.zeros((len(us), len(items["pub"])), dtype=bool)
        recent = np.full((len(us), RECENT), -1)
        for step in range(int(lengths[us].max(initial=0))):
            on = np.flatnonzero(lengths[us] > step)
            _drift(rng, users, us[on], WARMUP_DAYS / lengths[us[on]], trans.strength)
            logw = (2.5 * _mixed_many(users, items, us[on], archive, text[on]) + 0.5 * items["logpop"][archive]
                    + trans.bonus(archive, trans.pulls(recent[on]), seen[on]))
            logw[seen[on][:, archive]] = -np.inf
            picks = archive[np.argmax(logw + rng.gumbel(size=logw.shape), axis=1)]
            seen[on, picks] = True
            recent[on] = np.column_stack([recent[on, 1:], picks])
            for u, item in zip(us[on], picks):
                out[u].append(int(item))
    return out


def _affinity(users: dict, items: dict, period: int, u: int, idx: np.ndarray) -> np.ndarray:
    """How much user u likes items idx in a period: log category and subcategory preference + entities
    (visible in the text), mixed with the latent factor match (invisible) by `collaborative`."""
    return _mixed(users, items, u, idx, _text_affinity(users, items, period, u, idx))


def _text_affinity(users: dict, items: dict, period: int, u: int, idx: np.ndarray) -> np.ndarray:
    """The text-visible part of the affinity before any drift: category, subcategory, favourite entities."""
    return (np.log(users["pref"][period, u, items["cat"][idx]] + 0.03)
            + 0.8 * np.log(users["sub"][u, items["sub"][idx]] + 0.15)
            + 1.2 * users["fav"][period, u, items["ent"][idx]])


def _mixed(users: dict, items: dict, u: int, idx: np.ndarray, text: np.ndarray) -> np.ndarray:
    """The affinity from its text part: plus the drifted category shift, mixed with the latent match."""
    if "category_shift" in users:  # the drift of `sequential`
        text = text + users["category_shift"][u, items["cat"][idx]]
    share = users.get("collaborative", 0.0)
    if not share:
        return text
    return _mix(text, items["latent"][idx] @ users["latent"][u], share)


def _mixed_many(users: dict, items: dict, us: np.ndarray, idx: np.ndarray, text: np.ndarray) -> np.ndarray:
    """`_mixed` of users `us` (text: users x idx) at once."""
    text = text + users["category_shift"][us[:, None], items["cat"][idx]]
    share = users.get("collaborative", 0.0)
    if not share:
        return text
    return _mix(text, users["latent"][us] @ items["latent"][idx].T, share)


def _mix(text: np.ndarray, latent: np.ndarray, share: float) -> np.ndarray:
    """Text affinity and latent match (unit variance) mixed so the latent part carries `share` of the variance."""
    mean, spread = TEXT_AFFINITY
    return mean + np.sqrt(1 - share) * (text - mean) + np.sqrt(share) * spread * latent


def _gumbel_top(rng: np.random.Generator, logw: np.ndarray, k: int) -> np.ndarray:
    """k draws without replacement with probabilities proportional to exp(logw), in draw order."""
    keys = logw + rng.gumbel(size=len(logw))
    top = np.argpartition(-keys, k - 1)[:k] if k < len(keys) else np.arange(len(keys))
    return top[np.argsort(-keys[top], kind="stable")]


def _warmup(rng: np.random.Generator, users: dict, items: dict) -> list[list[int]]:
    """Pre-log histories: archive items drawn from period-1 preferences and popularity, oldest first."""
    archive = np.flatnonzero(items["pub"] < 0)
    out: list[list[int]] = []
    for u in range(users["sub"].shape[0]):
        if rng.random() < EMPTY_WARMUP:
            out.append([])
            continue
        length = int(np.clip(rng.lognormal(2.2, 0.8), 1, min(MAX_HISTORY, len(archive))))
        logw = 2.5 * _affinity(users, items, 0, u, archive) + 0.5 * items["logpop"][archive]
        picked = archive[_gumbel_top(rng, logw, length)]
        out.append([int(i) for i in picked[np.argsort(items["pub"][picked], kind="stable")]])
    return out


def _day_seconds(rng: np.random.Generator, n: int) -> np.ndarray:
    """n distinct seconds of a day, sorted, following a morning/lunch/evening activity curve."""
    h = np.arange(86400) / 3600
    curve = 0.3 + np.exp(-((h - 8) ** 2) / 8) + 0.5 * np.exp(-((h - 13) ** 2) / 6) + 0.8 * np.exp(-((h - 20) ** 2) / 10)
    return np.sort(_gumbel_top(rng, np.log(curve), min(n, 86400)))


def _impression(rng: np.random.Generator, users: dict, items: dict, period: int, u: int, t: float,
                pool: np.ndarray, steer: tuple[Transitions, np.ndarray, np.ndarray] | None = None,
                ) -> tuple[np.ndarray, np.ndarray]:
    """Candidates (a mix of popular and uniform fresh items) and their click labels (at least one click);
    `steer` (transitions, the pull of the user's recent consumptions, what the user has consumed) adds what
    recent consumptions pull to both."""
    logpop = items["logpop"][pool] - (t - items["pub"][pool]) / items["tau"][pool] + boost(items, pool, t)
    share = np.exp(logpop - logpop.max())
    mix = 0.6 * share / share.sum() + 0.4 / len(pool)
    if steer is not None:
        mix = steer[0].show(mix, pool, steer[1])
    n_cand = int(np.clip(rng.lognormal(np.log(CANDIDATES[period]), 0.4), 10, 50))
    pick = rng.permutation(_gumbel_top(rng, np.log(mix), min(n_cand, len(pool))))
    bias, w_aff, w_pop, noise = CLICK[period]
    logit = (bias + w_aff * _affinity(users, items, period, u, pool[pick]) + w_pop * logpop[pick]
             + rng.normal(0, noise, len(pick)))
    if steer is not None:
        logit = logit + steer[0].bonus(pool[pick], steer[1], steer[2])
    prob = 1 / (1 + np.exp(-logit))
    labels = (rng.random(len(pick)) < prob).astype(np.int8)
    if not labels.any():
        labels[rng.choice(len(pick), p=prob / prob.sum())] = 1
    return pool[pick], labels


def _simulate(rng: np.random.Generator, size: SyntheticSize, users: dict, items: dict,
              history: list[list[int]], trans: Transitions | None = None) -> list[Impression]:
    """All impressions of all periods in time order; a history holds only clicks made before it. With `trans`
    the user's taste drifts between impressions, recent consumptions steer the impression and its clicks are
    listed in the order they are consumed."""
    seen = np.zeros((len(history), len(items["pub"])), dtype=bool)  # no candidate is already in the history
    for u, h in enumerate(history):
        seen[u, h] = True
    last_seen = np.zeros(len(history))  # when each user's taste last moved (the warm-up ends at the log's start)
    out: list[Impression] = []
    skipped = 0
    for day in range(N_PERIODS * size.days_per_period):
        period = day // size.days_per_period
        today = np.flatnonzero((items["pub"] <= day + 1) & (items["pub"] + items["window"] >= day))
        secs = _day_seconds(rng, size.impressions_per_day)
        for sec, u in zip(secs, rng.choice(len(history), size=len(secs), p=users["act"][period])):
            t = day + sec / 86400
            age = t - items["pub"][today]
            pool = today[(age >= 0) & (age < items["window"][today]) & ~seen[u, today]]
            if len(pool) < 2:  # only with very few items per day: the user has read everything fresh
                skipped += 1
                continue
            steer = None
            if trans is not None:
                _drift(rng, users, np.array([u]), np.array([t - last_seen[u]]), trans.strength)
                last_seen[u] = t
                steer = (trans, trans.pull(history[u]), seen[u])
            cands, labels = _impression(rng, users, items, period, int(u), t, pool, steer)
            if trans is not None and labels.sum() > 1:
                cands = cands.copy()
                cands[labels == 1] = trans.order(rng, cands[labels == 1], history[u])
            out.append((period, int(u), t, tuple(history[u][-MAX_HISTORY:]), cands, labels))
            clicked = [int(i) for i in cands[labels == 1]]
            history[u].extend(clicked)
            seen[u, clicked] = True
    if skipped:
        log.warning("%d impressions skipped: too few fresh items per day for n_items=%d", skipped, size.n_items)
    return out


def build_world(size: SyntheticSize, seed: int, collaborative: float = 0.0, catalogue: bool = False,
                sequential: float = 0.0) -> World:
    """Build catalogue, users and every impression of every period from the seed alone
    (`catalogue`: items that never go stale, see `_items`; `sequential`: see `Transitions` and `_drift`)."""
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(9)]  # the first 8 as before
    r_ids, r_ent, r_items, r_text, r_users, r_warm, r_sim, r_latent, r_seq = streams
    cats = list(TOPICS)
    subs = [s for c in cats for s in TOPICS[c][3]]
    sub_cat = np.array([cats.index(c) for c in cats for _ in TOPICS[c][3]])
    named = entities(r_ent, cats)
    ent_cat = np.array([e[3] for e in named])
    items = _items(r_items, size, cats, sub_cat, ent_cat, catalogue)
    if sequential and catalogue:
        release_dates(r_seq, items, N_PERIODS * size.days_per_period, sequential)
    trans = transitions(r_seq, items, catalogue, sequential) if sequential else None
    rows = news_rows(r_text, cats, subs, items, named)
    users = _users(r_users, size.n_users, cats, sub_cat, ent_cat)
    if collaborative:
        _latent(r_latent, users, items, collaborative)
    if trans is None:
        impressions = _simulate(r_sim, size, users, items, _warmup(r_warm, users, items))
    else:
        name_series(r_seq, rows, trans, catalogue)
        if collaborative:
            join_latent(items, trans)
        users["category_shift"] = np.zeros((size.n_users, len(cats)))
        impressions = _simulate(r_sim, size, users, items, _sequential_warmup(r_warm, users, items, trans), trans)
    news_ids, user_ids = _fixed_width_ids(r_ids, "N", size.n_items), _fixed_width_ids(r_ids, "U", size.n_users)
    ages = release_ages(r_seq, trans, items) if trans is not None else None
    return World(news_ids, rows, user_ids, impressions, ages, trans, items["pub"])


def mind_time(start: datetime.date, day: float) -> str:
    """Format `start + day` (fractional days) like MIND: 11/15/2019 8:55:22 AM."""
    ts = datetime.datetime.combine(start, datetime.time()) + datetime.timedelta(seconds=round(day * 86400))
    ampm = "AM" if ts.hour < 12 else "PM"
    return f"{ts.month}/{ts.day}/{ts.year} {ts.hour % 12 or 12}:{ts.minute:02d}:{ts.second:02d} {ampm}"


def _write_period(folder: Path, world: World, period: int, start: datetime.date) -> None:
    """Write behaviors.tsv and news.tsv of one period (impression ids count across periods)."""
    folder.mkdir(parents=True, exist_ok=True)
    referenced: set[int] = set()
    ids = world.news_ids
    with open(folder / "behaviors.tsv", "w", encoding="utf-8", newline="\n") as f:
        for imp_id, (p, u, t, hist, cands, labels) in enumerate(world.impressions, start=1):
            if p != period:
                continue
            referenced.update(hist)
            referenced.update(int(i) for i in cands)
            shown = " ".join(f"{ids[i]}-{y}" for i, y in zip(cands, labels))
            history = " ".join(ids[i] for i in hist)
            f.write(f"{imp_id}\t{world.user_ids[u]}\t{mind_time(start, t)}\t{history}\t{shown}\n")
    with open(folder / "news.tsv", "w", encoding="utf-8", newline="\n") as f:
        f.writelines(f"{ids[i]}\t{world.news_rows[i]}\n" for i in sorted(referenced, key=lambda i: ids[i]))


def _write_movielens(folder: Path, world: World, periods: Sequence[int], start: datetime.date, seed: int) -> None:
    """ratings.csv + movies.csv (the ml-latest layout): every consumption of the given periods is a rating,
    and each user's pre-log history becomes ratings in the days before the log starts."""
    import csv

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    epoch = datetime.datetime.combine(start, datetime.time(), tzinfo=datetime.timezone.utc).timestamp()
    rows, warmed, referenced = [], set(), set()
    last: dict[int, int] = {}  # clicks in order: each user's latest second so far
    for p, u, t, hist, cands, labels in world.impressions:
        if p + 1 not in periods:
            continue
        if u not in warmed:  # the history before the user's first impression: rated over the 10 days before
            warmed.add(u)
            for k, item in enumerate(hist):
                rows.append((u, item, epoch - 86400 * 10 + k * 3600 + int(rng.integers(0, 3600))))
        for k, item in enumerate(cands[labels == 1]):
            second = epoch + round(t * 86400)
            if world.transitions is not None:  # one second each, so the order survives sorting by time
                second = max(second + k, last.get(u, second) + 1)
                last[u] = second
            rows.append((u, int(item), second))
    with open(folder / "ratings.csv", "w", encoding="utf-8", newline="") as f:
        out = csv.writer(f, lineterminator="\n")
        out.writerow(["userId", "movieId", "rating", "timestamp"])
        for u, item, ts in sorted(rows, key=lambda r: (r[0], r[2])):
            referenced.add(item)
            out.writerow([int(world.user_ids[u][1:]), int(world.news_ids[item][1:]), float(rng.choice([3.5, 4.0, 4.5, 5.0])), int(ts)])
    with open(folder / "movies.csv", "w", encoding="utf-8", newline="") as f:
        out = csv.writer(f, lineterminator="\n")
        out.writerow(["movieId", "title", "genres"])
        for item in sorted(referenced, key=lambda i: int(world.news_ids[i][1:])):
            category, subcategory, title = world.news_rows[item].split("\t")[:3]
            age = int(rng.integers(0, 30)) if world.release_age is None else int(world.release_age[item])
            out.writerow([int(world.news_ids[item][1:]), f"{title} ({start.year - age})", f"{category}|{subcategory}"])


def generate(out: str | Path, size: SyntheticSize, seed: int, periods: Sequence[int] = (1, 2),
             start: datetime.date = datetime.date(2019, 11, 9), collaborative: float = 0.0,
             format: str = "mind", sequential: float = 0.0) -> list[Path]:
    """Write out/period{k}/news.tsv and out/period{k}/behaviors.tsv for each k in periods; return the folders.

    `collaborative`: share of preferences from latent factors no text shows (0 = all visible in the text;
    params.yaml's `synthetic.collaborative` is the bundled default).
    `sequential`: strength of the sequence signal, 0..1 (0 = none): series of sequels or follow-up stories,
    hidden follow-ups that recent consumptions pull into the next impression, taste that drifts over time and
    (movielens) movies released during the log, watched most when new.
    `format="movielens"`: a catalogue world (items never go stale) written as one ml-latest folder
    out/ratings.csv + out/movies.csv holding the given periods, a positive-only log like MovieLens.
    """
    if not periods or any(k not in range(1, N_PERIODS + 1) for k in periods):
        raise ConfigError(f"synthetic periods must be among 1..{N_PERIODS}, got {list(periods)}",
                          fix=f"ask for periods in 1..{N_PERIODS}, e.g. (1, 2)")
    if format not in ("mind", "movielens"):
        raise ConfigError(f"unknown synthetic format {format!r}", fix="use mind or movielens")
    if format == "movielens":
        world = build_world(size, seed, collaborative, catalogue=True, sequential=sequential)
        _write_movielens(Path(out), world, periods, start, seed)
        log.info("synthetic MovieLens-style data (seed %d, ml-latest layout) written to %s", seed, out)
        return [Path(out)]
    world = build_world(size, seed, collaborative, sequential=sequential)
    folders = []
    for k in periods:
        folder = Path(out) / f"period{k}"
        _write_period(folder, world, k - 1, start)
        folders.append(folder)
    log.info("synthetic MIND data (seed %d, %d impressions) written to %s", seed, len(world.impressions),
             ", ".join(map(str, folders)))
    return folders
