"""The hidden sequence structure of the generator's `sequential` knob: series of instalments (sequels,
follow-up stories) and every item's follow-ups, and how what a user consumed last pulls the next
consumption, and a catalogue's new releases. `llmrec.data.synthetic` builds the world with it; the taste drift
of the same knob lives there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from llmrec.errors import ConfigError

# sequence signal (`sequential`, 0..1; all of it is absent at 0): series, hidden follow-ups, new releases, taste drift
SERIES_START = 0.12                    # chance that an item not yet in a series starts one
SERIES_LENGTH = (2, 5)                 # instalments per series
SERIES_GAP_DAYS = 1.5                  # news: the next instalment is published within this many days
SERIES_LIKENESS = 0.8                  # correlation of an instalment's latent factors and popularity with the first one's
FOLLOW_UPS, SAME_CATEGORY = 3, 2.0     # hidden follow-ups per item; log-odds of one being of the item's category
FOLLOW_WINDOW_DAYS = (1.0, 3.0)        # news: follow-ups are published at most this long before / after the item
RECENT, RECENCY = 5, 0.5               # consumptions that steer the next, and the weight of each step back
SEQUEL_PULL, FOLLOW_PULL = 4.0, 2.5    # click-logit boost of a recent item's next instalment / follow-up (at 1)
SEQUEL_ALONE = 3.0                     # click-logit penalty of an instalment whose predecessor the user never consumed
SHOWN_SHARE = 0.3                      # candidate mass given to what recent consumptions pull (at 1)
SEQUEL_NAMES = (("{stem} {k}",), ("{stem} Part {r}",), ("{stem}: Chapter {k}",),
                ("{stem} Returns", "{stem} Forever", "{stem}: Resurrection", "{stem}: Legacy"))
FOLLOW_UP_NAMES = (("{stem}: update {j}",), ("{stem}, day {k}",), ("{stem}: what we know now", "{stem}: the latest",
                   "{stem}: what happened next", "{stem}: the aftermath"))
ROMAN = ("I", "II", "III", "IV", "V", "VI")
RELEASED = 0.15                        # catalogue: share of the items released during the log (the rest before it)
RELEASE_BOOST, RELEASE_FADE_DAYS = 3.0, 3.0  # log-popularity boost of a new release (at 1) and the days it fades over


@dataclass
class Transitions:
    """The hidden sequence structure of `sequential`: series of instalments (sequels, follow-up stories) and every
    item's follow-ups (what people move on to next; partly of its category, mostly not). What a user consumed
    last pulls these into the next impression and raises their click logit; older consumptions pull less."""

    strength: float        # `sequential`, 0..1
    next: np.ndarray       # each item's next instalment (-1: none)
    prev: np.ndarray       # each item's previous instalment (-1: none)
    position: np.ndarray   # instalment number in its series (0: not in a series, 1: the first)
    follow: np.ndarray     # items x FOLLOW_UPS follow-up items
    weight: np.ndarray     # items x FOLLOW_UPS strength of each follow-up, 0..1

    def pull(self, recent: Sequence[int]) -> np.ndarray:
        """Click-logit pull (before `strength`) of every item by the last RECENT consumptions (most recent last):
        next instalments and follow-ups, each step back weighing RECENCY times less."""
        last = list(recent[-RECENT:])
        return self.pulls(np.array([[-1] * (RECENT - len(last)) + last]))[0]

    def pulls(self, recent: np.ndarray) -> np.ndarray:
        """`pull` of many users at once: recent is users x RECENT item rows, most recent last, -1 = none."""
        out = np.zeros((len(recent), len(self.next)))
        rows = np.arange(len(recent))
        for back in range(RECENT):
            item = recent[:, RECENT - 1 - back]
            has = item >= 0
            w = RECENCY ** back
            sequel = has & (self.next[np.maximum(item, 0)] >= 0)
            np.add.at(out, (rows[sequel], self.next[item[sequel]]), w * SEQUEL_PULL)
            np.add.at(out, (np.repeat(rows[has], FOLLOW_UPS), self.follow[item[has]].ravel()),
                      w * FOLLOW_PULL * self.weight[item[has]].ravel())
        return out

    def show(self, mix: np.ndarray, pool: np.ndarray, pull: np.ndarray) -> np.ndarray:
        """Candidate-draw weights over `pool` with SHOWN_SHARE x strength of the mass moved to the pulled items
        (a feed shows the sequel of what you just watched)."""
        pulled = pull[pool]
        if not pulled.any():
            return mix
        share = SHOWN_SHARE * self.strength
        return (1 - share) * mix + share * pulled / pulled.sum()

    def bonus(self, cands: np.ndarray, pull: np.ndarray, seen: np.ndarray) -> np.ndarray:
        """Click-logit terms of candidates: their pull, minus SEQUEL_ALONE for an instalment whose predecessor
        the user has not consumed (`seen`: a boolean row over items)."""
        prev = self.prev[cands]
        alone = (prev >= 0) & ~seen[..., np.maximum(prev, 0)]  # one user's rows, or users x items
        return self.strength * (pull[..., cands] - SEQUEL_ALONE * alone)

    def order(self, rng: np.random.Generator, clicked: np.ndarray, recent: Sequence[int]) -> np.ndarray:
        """The order in which a user consumes one impression's clicks: each next one drawn by how strongly the
        consumptions so far pull it (never an instalment before its predecessor among them)."""
        history, left, out = list(recent), [int(i) for i in clicked], []
        while left:
            ready = [i for i in left if self.prev[i] not in left]
            logw = self.strength * self.pull(history)[ready]
            pick = ready[int(np.argmax(logw + rng.gumbel(size=len(ready))))]
            out.append(pick)
            history.append(pick)
            left.remove(pick)
        return np.array(out, dtype=clicked.dtype)


def transitions(rng: np.random.Generator, items: dict, catalogue: bool, strength: float) -> Transitions:
    """Series and follow-ups of the catalogue; instalments take their series' category, subcategory and entity
    and a popularity correlated with the one before (`items` changes in place)."""
    if not 0.0 < strength <= 1.0:
        raise ConfigError(f"synthetic.sequential must be in [0, 1], got {strength}", fix="e.g. 0.5")
    nxt, prev, position = _series(rng, items["pub"], catalogue)
    for j in np.argsort(position, kind="stable"):  # first instalments first, so each copies a finished one
        i = prev[j]
        if i >= 0:
            for key in ("cat", "sub", "ent"):
                items[key][j] = items[key][i]
            items["logpop"][j] = _alike(items["logpop"][i], items["logpop"][j])
    follow, weight = _follow_ups(rng, items, catalogue)
    return Transitions(strength, nxt, prev, position, follow, weight)


def release_dates(rng: np.random.Generator, items: dict, log_days: float, strength: float) -> None:
    """A catalogue's new releases: RELEASED of the items come out during the log instead of before it, each with
    a popularity boost (RELEASE_BOOST x strength) that fades over RELEASE_FADE_DAYS, so what a user consumed
    lately tells what is new now, as on real movie logs (`items` changes in place; `boost` is added)."""
    new = rng.random(len(items["pub"])) < RELEASED
    items["pub"][new] = rng.uniform(0, log_days, int(new.sum()))
    items["boost"] = np.where(new, RELEASE_BOOST * strength, 0.0)


def boost(items: dict, idx: np.ndarray, t: float) -> np.ndarray:
    """The log-popularity boost of items idx at time t (0 without `release_dates`)."""
    if "boost" not in items:
        return np.zeros(len(idx))
    return items["boost"][idx] * np.exp(-np.maximum(t - items["pub"][idx], 0.0) / RELEASE_FADE_DAYS)


def _alike(previous: np.ndarray | float, own: np.ndarray | float) -> np.ndarray | float:
    """A value correlated SERIES_LIKENESS with the previous instalment's, with the same spread."""
    return SERIES_LIKENESS * previous + np.sqrt(1 - SERIES_LIKENESS ** 2) * own


def _series(rng: np.random.Generator, pub: np.ndarray, catalogue: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(next, previous, instalment number) of series of SERIES_LENGTH items in publish order; news instalments
    follow each other within SERIES_GAP_DAYS."""
    n = len(pub)
    order = np.argsort(pub, kind="stable")
    nxt, prev, position = np.full(n, -1), np.full(n, -1), np.zeros(n, dtype=int)
    gap = np.inf if catalogue else SERIES_GAP_DAYS
    for p, first in enumerate(order):
        if position[first] or rng.random() >= SERIES_START:
            continue
        length, last, q = int(rng.integers(SERIES_LENGTH[0], SERIES_LENGTH[1] + 1)), first, p
        position[first] = 1
        while position[last] < length:
            q += int(rng.geometric(0.05))
            while q < n and position[order[q]]:
                q += 1
            if q >= n or pub[order[q]] - pub[last] > gap:
                break
            j = order[q]
            nxt[last], prev[j], position[j], last = j, last, position[last] + 1, j
        if last == first:  # nothing followed: not a series
            position[first] = 0
    return nxt, prev, position


def _follow_ups(rng: np.random.Generator, items: dict, catalogue: bool) -> tuple[np.ndarray, np.ndarray]:
    """FOLLOW_UPS hidden follow-ups of every item and their strengths (0: none found): drawn from the catalogue
    (news: items published around the item) leaning to the item's category and to popular items."""
    pub, cat, logpop = items["pub"], items["cat"], items["logpop"]
    n, draws = len(pub), 4 * FOLLOW_UPS
    order = np.argsort(pub, kind="stable")
    if catalogue:
        lo, hi = np.zeros(n, dtype=int), np.full(n, n)
    else:
        before, after = FOLLOW_WINDOW_DAYS
        lo = np.searchsorted(pub[order], pub - before, side="left")
        hi = np.searchsorted(pub[order], pub + after, side="right")
    cand = order[lo[:, None] + (rng.random((n, draws)) * (hi - lo)[:, None]).astype(int)]
    keys = SAME_CATEGORY * (cat[cand] == cat[:, None]) + 0.5 * logpop[cand] + rng.gumbel(size=cand.shape)
    by_id = np.argsort(cand, axis=1, kind="stable")
    sorted_cand = np.take_along_axis(cand, by_id, axis=1)
    repeat = np.zeros_like(sorted_cand, dtype=bool)
    repeat[:, 1:] = sorted_cand[:, 1:] == sorted_cand[:, :-1]
    np.put_along_axis(keys, by_id, np.where(repeat, -np.inf, np.take_along_axis(keys, by_id, axis=1)), axis=1)
    keys[cand == np.arange(n)[:, None]] = -np.inf
    top = np.argsort(-keys, axis=1, kind="stable")[:, :FOLLOW_UPS]
    follow = np.take_along_axis(cand, top, axis=1)
    weight = rng.uniform(0.3, 1.0, follow.shape) * np.isfinite(np.take_along_axis(keys, top, axis=1))
    return follow, weight


def join_latent(items: dict, trans: Transitions) -> None:
    """Instalments' latent factors correlated with the previous instalment's (the same audience)."""
    for j in np.argsort(trans.position, kind="stable"):
        if trans.prev[j] >= 0:
            items["latent"][j] = _alike(items["latent"][trans.prev[j]], items["latent"][j])


def name_series(rng: np.random.Generator, rows: list[str], trans: Transitions, catalogue: bool) -> None:
    """Titles of later instalments: the first one's title and a sequel (or follow-up story) suffix, in one style
    per series, so text models can see the series as readers do (`rows` changes in place)."""
    styles = SEQUEL_NAMES if catalogue else FOLLOW_UP_NAMES
    for first in np.flatnonzero(trans.position == 1):
        cols = rows[first].split("\t")
        names = styles[int(rng.integers(len(styles)))]
        j = trans.next[first]
        while j >= 0:
            k = int(trans.position[j])
            name = names[min(k - 2, len(names) - 1)].format(stem=cols[2], k=k, j=k - 1, r=ROMAN[k - 1])
            own = rows[j].split("\t")
            own[2], own[5] = name, cols[5]  # the title's entity is the first title's, at the same offset
            rows[j] = "\t".join(own)
            j = trans.next[j]


def release_ages(rng: np.random.Generator, trans: Transitions, items: dict) -> np.ndarray:
    """Years before the log each item came out: 0-29, a later instalment 1-3 years after the one before it, 0 for
    one released during the log (`release_dates`)."""
    age = rng.integers(0, 30, len(trans.prev))
    for j in np.argsort(trans.position, kind="stable"):
        if trans.prev[j] >= 0:
            age[j] = max(0, age[trans.prev[j]] - int(rng.integers(1, 4)))
    if "boost" in items:
        age[items["pub"] >= 0] = 0
    return age
