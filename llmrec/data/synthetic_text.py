"""The text of the generator's items: categories and their words, named entities, and the MIND news.tsv
row (title, abstract, url, entity JSON) of every item, written from templates with the world's random stream."""

from __future__ import annotations

import json

import numpy as np

EMERGING = "esports"                   # the category that appears in period 2

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

def entities(rng: np.random.Generator, cats: list[str], per_cat: int = 12) -> list[Entity]:
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


def news_rows(rng: np.random.Generator, cats: list[str], subs: list[str], items: dict,
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
