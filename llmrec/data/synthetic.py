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
"""

from __future__ import annotations

import datetime
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from llmrec.config import SyntheticSize
from llmrec.errors import ConfigError

log = logging.getLogger(__name__)

N_PERIODS = 2
MAX_HISTORY = 50
EMERGING = "esports"                   # the category that appears in period 2
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
# sequence signal (`sequential`, 0..1; all of it is absent at 0): series, hidden follow-ups, taste drift
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
DRIFT_DAYS = 6.0                       # correlation time of a user's taste (at 1; longer below)
CATEGORY_DRIFT = 0.8                   # stationary spread of the drift of a user's log category preferences
WARMUP_DAYS = 4.0                      # the pre-log history drifts over this many days
SEQUEL_NAMES = (("{stem} {k}",), ("{stem} Part {r}",), ("{stem}: Chapter {k}",),
                ("{stem} Returns", "{stem} Forever", "{stem}: Resurrection", "{stem}: Legacy"))
FOLLOW_UP_NAMES = (("{stem}: update {j}",), ("{stem}, day {k}",), ("{stem}: what we know now", "{stem}: the latest",
                   "{stem}: what happened next", "{stem}: the aftermath"))
ROMAN = ("I", "II", "III", "IV", "V", "VI")

# category: (share of supply in period 1, org-name suffixes, category words, {subcategory: words})
TOPICS: dict[str, tuple[float, str, str, dict[str, str]]] = {
    "news": (0.20, "University,Institute,Police Department,Council",
        "report officials state city police court law government public community county school", {
            "newsus": "governor residents town sheriff highway district mayor neighborhood",
            "newspolitics": "president senate congress democrats republicans vote campaign impeachment",
            "newsworld": "minister protests border embassy foreign summit refugees treaty",
            "newscrime": "arrested suspect murder shooting charged robbery prison trial",
            "newsscienceandtechnology": "scientists researchers space nasa discovery robot technology software"}),
    "sports": (0.14, "Hawks,Bears,Tigers,Rangers,Comets,Wolves",
        "game season team coach win victory player fans league playoff score championship", {
            "football_nfl": "quarterback touchdown nfl sack yards kickoff receiver linebacker",
            "basketball_nba": "nba dunk rebounds assists guard buzzer basketball court",
            "baseball_mlb": "mlb pitcher inning homer bullpen baseball slugger dugout",
            "soccer": "soccer goal striker midfielder penalty premier cup goalkeeper",
            "golf": "golf birdie putt masters fairway caddie bogey clubhouse"}),
    "finance": (0.08, "Capital,Bank,Holdings,Financial",
        "money market stocks investors company economy billion shares profit earnings price", {
            "finance-companies": "ceo layoffs merger acquisition startup revenue quarterly retailer",
            "markets": "dow nasdaq wall street rally selloff bonds index",
            "personalfinance": "retirement savings taxes budget credit debt mortgage paycheck",
            "realestate": "homes housing buyers rent apartment realtor listing property"}),
    "lifestyle": (0.08, "Boutique,Foundation,Living",
        "life family style people home holiday gift trends ideas", {
            "lifestylebuzz": "viral photo internet wedding mom dad kids surprise",
            "lifestyleroyals": "royal prince princess duchess queen palace duke crown",
            "shop-holidays": "shopping deals black friday gifts sale christmas thanksgiving",
            "pets": "dog puppy cat rescue pet shelter adoption kitten"}),
    "health": (0.07, "Medical Center,Clinic,Health,Pharma",
        "health doctors patients study risk disease hospital care body", {
            "wellness": "sleep stress meditation mental anxiety habits mindfulness relaxation",
            "medical": "cancer surgery treatment vaccine diagnosis flu symptoms therapy",
            "nutrition": "diet protein sugar vitamins calories weight eating fiber",
            "fitness": "workout exercise running gym muscles cardio strength training"}),
    "entertainment": (0.08, "Studios,Pictures,Entertainment",
        "star hollywood celebrity fans film actress actor famous", {
            "celebrity": "gossip divorce dating instagram couple paparazzi engagement carpet",
            "movienews": "movie box office trailer director sequel premiere cinema oscar",
            "entertainment-books": "novel author book bestseller memoir chapter publisher reading"}),
    "travel": (0.06, "Airlines,Resorts,Cruises",
        "travel trip vacation destination tourists flight hotel visit", {
            "traveltrends": "bucket list beaches islands cities guide places wanderlust",
            "travelnews": "airport airline passengers delays tsa cruise luggage boarding",
            "adventuretravel": "hiking camping mountains national park trail kayak wilderness"}),
    "foodanddrink": (0.06, "Kitchen,Bistro,Winery,Bakery",
        "food recipe dinner restaurant chef cooking meal taste kitchen", {
            "recipes": "casserole soup pasta chicken baked slowcooker sauce roast",
            "restaurants": "menu diner burger pizza chain fastfood brunch waiter",
            "wine": "wine vineyard bottle beer cocktail brewery whiskey sommelier",
            "baking": "cake cookies pie bread dessert chocolate pumpkin frosting"}),
    "autos": (0.05, "Motors,Automotive,Cars",
        "car cars vehicle driver road truck engine auto", {
            "autosnews": "recall dealership sales automakers factory suv pickup lineup",
            "autosenthusiasts": "horsepower muscle sportscar racing convertible classic coupe v8",
            "autoselectric": "electric battery charging tesla range hybrid ev charger"}),
    "weather": (0.05, "Valley,County,Coast",
        "weather forecast storm temperatures rain snow winds cold", {
            "weathertopstories": "winter blizzard freezing frost ice chill degrees snowfall",
            "storms": "hurricane tornado flooding thunderstorm lightning damage evacuation hail",
            "climate": "climate warming drought wildfire emissions heatwave glaciers environment"}),
    "tv": (0.05, "Network,TV,Channel",
        "tv episode series season finale viewers network show", {
            "tvnews": "ratings renewed canceled streaming netflix host anchor lineup",
            "realitytv": "reality contestant bachelor eliminated judges dancing competition voted",
            "tv-celebrity": "sitcom cast reunion character spinoff drama comedy actors"}),
    "music": (0.05, "Records,Band,Orchestra",
        "music song album singer band tour concert fans", {
            "musicnews": "grammy charts billboard single release lyrics video awards",
            "hiphop": "rapper hiphop rap beat mixtape verse producer feature",
            "country": "country nashville guitar cowboy ballad fiddle opry banjo",
            "concerts": "stage festival tickets arena setlist encore crowd livestream"}),
    EMERGING: (0.0, "Gaming,Esports,Squad,Clan",
        "esports gamers gaming tournament stream players team league console", {
            "esports_tournaments": "bracket finals prize pool clutch champions qualifier lan",
            "esports_streaming": "twitch streamer viewers subscribers chat clips creator followers",
            "esports_games": "patch meta shooter moba battle royale fortnite controller"}),
}
VERBS = "reveals faces wins makes shares says plans gets takes announces returns slams joins warns explains".split()
ADJS = "new big best latest surprising huge top major first simple shocking rare".split()
FILLER = "today week year time people day way thing world things know need after could still now more here".split()
FIRST = ("James Mary Robert Linda Michael Sarah David Karen Daniel Lisa Mark Emily Steven Laura Paul Anna Kevin "
         "Nicole Jason Rachel Ryan Megan Eric Olivia Tyler").split()
LAST = ("Walker Brooks Hayes Porter Ellis Warren Grant Fisher Reed Holt Marsh Dalton Pierce Carver Lowe Barrett "
        "Quinn Sutton Keller Monroe Vaughn Hale Mercer Rowe").split()
PLACE_A = "North Blue Silver Red Iron Green Lake Stone Bright Summit Oak River Eagle Star Harbor".split()
PLACE_B = "field ridge wood bay gate point crest view dale ford".split()
TITLE_E = ["{E} {v} {a} {s} {c}", "{E} {v} the {s} {c} {g}", "Why {E} {v} {a} {s}", "{E}: {a} {s} {c} {g}"]
TITLE_0 = ["{a} {s} {c}: what to know", "{n} {a} {s} {c} {g} {g}", "How the {s} {c} {v} {a} {c}",
           "The {a} {c} {s} everyone is talking about", "{s} {c} {v} {a} {g} {g}"]
ABSTRACT = ["{E} {v} the {a} {s} {c} this {g}.", "The {c} {s} {v} {a} {g} {g} {c}.",
            "{a} {s} and {c} {g} as {g} {c} {v} {s}.", "Here is what {g} {g} about the {s} {c}."]
URL_CHARS = list("ABCDEFGHJKLMNPQRSTUVWXYZ0123456789")
Entity = tuple[str, str, str, int]     # label, MIND type, Wikidata id, category index
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


def _fixed_width_ids(rng: np.random.Generator, prefix: str, n: int) -> list[str]:
    """n distinct ids like N12345 with equal digit counts (so text order == numeric order)."""
    base = 10 ** max(4, len(str(n)))
    return [f"{prefix}{x}" for x in base + rng.choice(9 * base, size=n, replace=False)]


def _zipf(k: int) -> np.ndarray:
    """Zipf weights 1/rank over k ranks, normalised."""
    w = 1.0 / np.arange(1, k + 1)
    return w / w.sum()


def _entities(rng: np.random.Generator, cats: list[str], per_cat: int = 12) -> list[Entity]:
    """Synthetic but plausible people and organisations (places for weather) of every category."""
    out: list[Entity] = []
    seen: set[str] = set()
    for c, cat in enumerate(cats):
        suffixes = TOPICS[cat][1].split(",")
        while len(out) < (c + 1) * per_cat:
            if rng.random() < 0.5:
                label, kind = f"{rng.choice(FIRST)} {rng.choice(LAST)}", "P"
            else:
                place = f"{rng.choice(PLACE_A)}{rng.choice(PLACE_B)}"
                label, kind = f"{place} {rng.choice(suffixes)}", "G" if cat == "weather" else "O"
            if label not in seen:
                seen.add(label)
                out.append((label, kind, f"Q{int(rng.integers(1000, 9_999_999))}", c))
    return out


def _fill(rng: np.random.Generator, template: str, cat: str, sub: str, entity: str) -> str:
    """Fill a template with category/subcategory words (some from other topics), fillers and the entity."""
    cwords, swords = TOPICS[cat][2].split(), TOPICS[cat][3][sub].split()
    others = [k for k in TOPICS if k not in (cat, EMERGING)]

    def word(kind: str) -> str:
        if kind == "c" and rng.random() < 0.15:
            return str(rng.choice(TOPICS[str(rng.choice(others))][2].split()))
        if kind == "n":
            return str(rng.integers(3, 26))
        pool = {"c": cwords, "s": swords if rng.random() < 0.8 else cwords, "g": FILLER, "v": VERBS, "a": ADJS}[kind]
        return str(rng.choice(pool))

    text = template.replace("{E}", entity)
    for kind in "csgvan":
        while "{" + kind + "}" in text:
            text = text.replace("{" + kind + "}", word(kind), 1)
    return text[0].upper() + text[1:]


def _entity_json(rng: np.random.Generator, text: str, entity: Entity | None) -> str:
    """MIND entity column: the entity, when it occurs in `text`, with its offset."""
    if entity is None or entity[0] not in text:
        return "[]"
    row = {"Label": entity[0], "Type": entity[1], "WikidataId": entity[2],
           "Confidence": round(float(rng.uniform(0.9, 1.0)), 3),
           "OccurrenceOffsets": [text.find(entity[0])], "SurfaceForms": [entity[0]]}
    return json.dumps([row])


def _news_rows(rng: np.random.Generator, cats: list[str], subs: list[str], items: dict,
               entities: list[Entity]) -> list[str]:
    """Category, subcategory, title, abstract, url and entity columns of every item."""
    rows = []
    for c, s, e in zip(items["cat"], items["sub"], items["ent"]):
        ent = entities[e] if e < len(entities) else None
        label = ent[0] if ent else ""
        title = _fill(rng, str(rng.choice(TITLE_E if ent else TITLE_0)), cats[c], subs[s], label)
        sentences = [t for t in ABSTRACT if ent or "{E}" not in t]
        picks = rng.choice(len(sentences), size=int(rng.integers(2, 4)), replace=False)
        abstract = " ".join(_fill(rng, sentences[i], cats[c], subs[s], label) for i in picks)
        if rng.random() < 0.05:
            abstract = ""
        url = f"https://assets.msn.com/labs/mind/AA{''.join(rng.choice(URL_CHARS, 6))}.html"
        cols = [cats[c], subs[s], title, abstract, url, _entity_json(rng, title, ent), _entity_json(rng, abstract, ent)]
        rows.append("\t".join(x.replace("\t", " ").replace("\n", " ") for x in cols))
    return rows


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


def _transitions(rng: np.random.Generator, items: dict, catalogue: bool, strength: float) -> Transitions:
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


def _join_latent(items: dict, trans: Transitions) -> None:
    """Instalments' latent factors correlated with the previous instalment's (the same audience)."""
    for j in np.argsort(trans.position, kind="stable"):
        if trans.prev[j] >= 0:
            items["latent"][j] = _alike(items["latent"][trans.prev[j]], items["latent"][j])


def _name_series(rng: np.random.Generator, rows: list[str], trans: Transitions, catalogue: bool) -> None:
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


def _release_ages(rng: np.random.Generator, trans: Transitions) -> np.ndarray:
    """Years before the log each item came out: 0-29, a later instalment 1-3 years after the one before it."""
    age = rng.integers(0, 30, len(trans.prev))
    for j in np.argsort(trans.position, kind="stable"):
        if trans.prev[j] >= 0:
            age[j] = max(0, age[trans.prev[j]] - int(rng.integers(1, 4)))
    return age


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
    logpop = items["logpop"][pool] - (t - items["pub"][pool]) / items["tau"][pool]
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
    entities = _entities(r_ent, cats)
    ent_cat = np.array([e[3] for e in entities])
    items = _items(r_items, size, cats, sub_cat, ent_cat, catalogue)
    trans = _transitions(r_seq, items, catalogue, sequential) if sequential else None
    rows = _news_rows(r_text, cats, subs, items, entities)
    users = _users(r_users, size.n_users, cats, sub_cat, ent_cat)
    if collaborative:
        _latent(r_latent, users, items, collaborative)
    if trans is None:
        impressions = _simulate(r_sim, size, users, items, _warmup(r_warm, users, items))
    else:
        _name_series(r_seq, rows, trans, catalogue)
        if collaborative:
            _join_latent(items, trans)
        users["category_shift"] = np.zeros((size.n_users, len(cats)))
        impressions = _simulate(r_sim, size, users, items, _sequential_warmup(r_warm, users, items, trans), trans)
    news_ids, user_ids = _fixed_width_ids(r_ids, "N", size.n_items), _fixed_width_ids(r_ids, "U", size.n_users)
    ages = _release_ages(r_seq, trans) if trans is not None else None
    return World(news_ids, rows, user_ids, impressions, ages, trans)


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
    hidden follow-ups that recent consumptions pull into the next impression, and taste that drifts over time.
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
