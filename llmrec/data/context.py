"""What a ranker sees of an impression: the user's history before it and the candidates shown.

MIND gives both. Other sources do not (see `SourceInfo`): a history is then the user's label-1
interactions strictly before the impression, and a positive-only log gets sampled negatives —
drawn with a seed, only from items already seen in the log before the impression, never from the
user's own earlier positives. `with_context` fills both into a slice of the data, so training,
evaluation and drift read every source the same way; nothing here can see the future.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from llmrec.data.contract import Dataset

HISTORY_KEEP = 50  # most recent events kept in a derived history (renderers use far fewer)


def instants(stamps: pd.Series) -> np.ndarray:
    """UTC instants as datetime64[ns], comparable with np.searchsorted."""
    return pd.to_datetime(stamps, utc=True).dt.tz_localize(None).to_numpy(dtype="datetime64[ns]")


def derived_history(log: Dataset, impressions: pd.DataFrame, max_len: int = HISTORY_KEEP) -> pd.Series:
    """Space-separated ids of each impression user's label-1 items strictly before its timestamp."""
    pos = log.interactions.loc[log.interactions["label"] == 1, ["user_id", "item_id", "timestamp"]]
    pos = pos[pos["user_id"].isin(impressions["user_id"].unique())]
    pos = pos.sort_values(["user_id", "timestamp"], kind="stable")
    by_user = {
        u: (instants(g["timestamp"]), g["item_id"].to_numpy())
        for u, g in pos.groupby("user_id", sort=False)
    }
    out = []
    empty = (np.array([], dtype="datetime64[ns]"), np.array([], dtype=object))
    for user, ts in zip(impressions["user_id"], instants(impressions["timestamp"])):
        times, items = by_user.get(user, empty)
        end = int(np.searchsorted(times, ts, side="left"))
        out.append(" ".join(items[max(0, end - max_len) : end]))
    return pd.Series(out, index=impressions.index, dtype=object)


def consumed_before(log: Dataset, impressions: pd.DataFrame) -> list[set[str]]:
    """Per impression (in row order): every item its user consumed before it, however long ago: label-1 items
    of `log` strictly before its timestamp, plus its own history (explicit-history sources). A history handed
    to a model may be cut to a window; what a ranking excludes as already consumed is not."""
    pos = log.interactions.loc[log.interactions["label"] == 1, ["user_id", "item_id", "timestamp"]]
    pos = pos[pos["user_id"].isin(impressions["user_id"].unique())].sort_values(["user_id", "timestamp"], kind="stable")
    by_user = {u: (instants(g["timestamp"]), g["item_id"].to_numpy()) for u, g in pos.groupby("user_id", sort=False)}
    empty = (np.array([], dtype="datetime64[ns]"), np.array([], dtype=object))
    histories = impressions["history"].fillna("").astype(str) if "history" in impressions else pd.Series("", index=impressions.index)
    out = []
    for user, ts, history in zip(impressions["user_id"], instants(impressions["timestamp"]), histories):
        times, items = by_user.get(user, empty)
        out.append(set(items[: int(np.searchsorted(times, ts, side="left"))]) | set(history.split()))
    return out


def history_lengths(log: Dataset, impressions: pd.DataFrame) -> pd.Series:
    """Number of history entries of each impression, without building the lists."""
    if log.source.explicit_history:
        return impressions["history"].fillna("").astype(str).str.split().str.len().fillna(0).astype("int64")
    pos = log.interactions.loc[log.interactions["label"] == 1, ["user_id", "timestamp"]]
    pos = pos.sort_values(["user_id", "timestamp"], kind="stable")
    counts = []
    grouped = {u: instants(g) for u, g in pos.groupby("user_id", sort=False)["timestamp"]}
    empty = np.array([], dtype="datetime64[ns]")
    for user, ts in zip(impressions["user_id"], instants(impressions["timestamp"])):
        counts.append(int(np.searchsorted(grouped.get(user, empty), ts, side="left")))
    return pd.Series(counts, index=impressions.index, dtype="int64")


def sample_negatives(log: Dataset, impressions: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """`n` label-0 interactions per impression, reproducible for a given seed and slice.

    Candidates are items whose first interaction in `log` is before the impression, minus the
    user's positives up to and including it. Fewer than `n` are returned where fewer exist.
    """
    inter = log.interactions
    first_seen = inter.groupby("item_id", sort=False)["timestamp"].min().sort_values(kind="stable")
    seen_items = first_seen.index.to_numpy()
    seen_times = instants(first_seen)
    pos = inter.loc[(inter["label"] == 1) & inter["user_id"].isin(impressions["user_id"].unique()), ["user_id", "item_id", "timestamp"]]
    pos = pos.sort_values(["user_id", "timestamp"], kind="stable")
    by_user = {u: (instants(g["timestamp"]), g["item_id"].to_numpy()) for u, g in pos.groupby("user_id", sort=False)}
    empty = (np.array([], dtype="datetime64[ns]"), np.array([], dtype=object))
    rng = np.random.default_rng(seed)
    rows: list[tuple[str, str, str, object]] = []
    order = impressions.sort_values("impression_id", kind="stable")  # same draws whatever the row order
    for imp, user, ts in zip(order["impression_id"], order["user_id"], instants(order["timestamp"])):
        available = int(np.searchsorted(seen_times, ts, side="left"))
        times, items = by_user.get(user, empty)
        exclude = set(items[: int(np.searchsorted(times, ts, side="right"))])
        picks: list[str] = []
        if available > len(exclude):
            tries = 0
            chosen: set[str] = set()
            while len(picks) < n and tries < 20:
                draw = seen_items[rng.integers(0, available, size=2 * n)]
                for item in draw:
                    if item not in exclude and item not in chosen:
                        chosen.add(item)
                        picks.append(item)
                        if len(picks) == n:
                            break
                tries += 1
        rows.extend((imp, user, item, ts) for item in picks)
    frame = pd.DataFrame(rows, columns=["impression_id", "user_id", "item_id", "timestamp"])
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
    frame["label"] = np.zeros(len(frame), dtype=np.int8)
    return frame


def with_context(part: Dataset, log: Dataset, negatives: int, seed: int) -> Dataset:
    """`part` with histories derived and negatives sampled where its source lacks them.

    `log` is everything known (usually the whole ingested dataset); only its rows before each
    impression are used. Sources that log both (MIND) come back unchanged.
    """
    imps, inter = part.impressions, part.interactions
    if not part.source.explicit_history:
        imps = imps.assign(history=derived_history(log, imps))
    if not part.source.logged_negatives and negatives > 0:
        sampled = sample_negatives(log, imps, negatives, seed)
        inter = pd.concat([inter, sampled[inter.columns]], ignore_index=True)
        inter = inter.sort_values(["impression_id", "label"], ascending=[True, False], kind="stable").reset_index(drop=True)
    return Dataset(part.items, imps.reset_index(drop=True), inter, part.source)


AGE_TOLERANCE_HOURS = 1e-3  # ~4 s: instants closer than this are the same moment


def hours(stamps: pd.Series | np.ndarray) -> np.ndarray:
    """UTC instants as float hours since the Unix epoch (NaN for missing)."""
    values = pd.to_datetime(pd.Series(stamps), utc=True)
    return ((values - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(hours=1)).to_numpy(dtype=float)


def first_seen_hours(log: Dataset) -> pd.Series:
    """item_id -> the first time (hours since the epoch) the log shows the item: shown or consumed in an
    interaction, or in a user's history at their first impression (explicit-history sources)."""
    inter = log.interactions
    first = pd.Series(hours(inter["timestamp"]), index=inter["item_id"].to_numpy()).groupby(level=0).min()
    if log.source.explicit_history and not log.impressions.empty:
        firsts = log.impressions.sort_values("timestamp", kind="stable").drop_duplicates("user_id")
        exploded = firsts.assign(item_id=firsts["history"].fillna("").astype(str).str.split()).explode("item_id").dropna(subset=["item_id"])
        in_history = pd.Series(hours(exploded["timestamp"]), index=exploded["item_id"].to_numpy()).groupby(level=0).min()
        first = pd.concat([first, in_history]).groupby(level=0).min()
    return first


def with_item_age(frame: pd.DataFrame, impressions: pd.DataFrame, first_seen: pd.Series,
                  consumed_only: bool = False) -> pd.DataFrame:
    """`frame` (impression_id, item_id, ...) plus `age_hours`: how long before the impression the log first
    showed the candidate (0 for an item it shows first then, NaN when the impression's time is unknown).
    `impressions` gives each impression's timestamp; ids not among them (e.g. the sampled protocol's
    "impression#k") use the part before "#". With `consumed_only` (positive-only logs, where an item
    appears only by being consumed) an item not consumed before the impression has no age (NaN): its
    first consumption is what is being predicted, so it cannot tell the model anything."""
    when = pd.Series(hours(impressions["timestamp"]), index=impressions["impression_id"].astype(str).to_numpy())
    when = when[~when.index.duplicated()]
    ids = frame["impression_id"].astype(str)
    t = ids.map(when)  # ids may hold "#" themselves (leave-last-out events): the whole id first
    t = t.fillna(ids.str.rsplit("#", n=1).str[0].map(when)).to_numpy(dtype=float)
    seen = frame["item_id"].map(first_seen).to_numpy(dtype=float)
    if consumed_only:
        with np.errstate(invalid="ignore"):
            age = np.where(t - seen > AGE_TOLERANCE_HOURS, t - seen, np.nan)
    else:
        age = np.where(np.isnan(seen), 0.0, np.maximum(t - seen, 0.0))
    return frame.assign(age_hours=np.where(np.isnan(t), np.nan, age))
