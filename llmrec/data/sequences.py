"""Users' consumption sequences and the validation slice every tuned model shares.

A user's sequence is the explicit history of their first impression (sources that give one) followed
by their consumed (label-1) items in time order; same-instant events keep the order of the
interactions table (the source file's order). The validation slice holds out the last consumption of
the users whose last one is the most recent, as leave-last-out evaluation holds out a user's last item
and the temporal split the latest ones. The hybrid chooses its training step and the weights of its
parts on it, and the baselines their settings (EASE's l2, ItemKNN's neighbours, SASRec's epochs), so
every model gets the same care on the same data.
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass

import numpy as np
import pandas as pd

from llmrec.data.context import hours
from llmrec.data.contract import Dataset, history_list

VALIDATION_USERS = 1000  # at most this many users' last training consumptions are held out (the most recent ones) ...
VALIDATION_SHARE = 0.05  # ... and at most this share of the consumptions, so a small log keeps most of its latest ones
MIN_VALIDATION = 50      # ... but at least this many (when there are)
AUTO = "auto"


def validation_size(consumptions: int) -> int:
    """How many users' last consumptions a validation slice holds out of a log of that many consumptions."""
    return min(VALIDATION_USERS, max(MIN_VALIDATION, int(VALIDATION_SHARE * consumptions)))


@dataclass(frozen=True)
class HeldOut:
    """One held-out consumption: the user's whole sequence before it (oldest first), the item, its time."""

    user: str
    history: list[str]
    item: str
    hours: float  # since the epoch; NaN for an item of an explicit history (no time given)


def timed_sequences(data: Dataset) -> tuple[pd.Series, pd.Series]:
    """(user_id -> consumed item ids, oldest first; user_id -> their times in hours since the epoch, NaN for
    the items of an explicit history, whose times the source does not give)."""
    inter = data.interactions
    pos = inter.loc[inter["label"] == 1, ["user_id", "item_id", "timestamp"]].sort_values(["user_id", "timestamp"], kind="stable")
    pos = pos.assign(hours=hours(pos["timestamp"]))
    clicks = pos.groupby("user_id", sort=True)["item_id"].agg(list)
    times = pos.groupby("user_id", sort=True)["hours"].agg(list)
    if not data.source.explicit_history or data.impressions.empty:
        return clicks, times
    first = data.impressions.sort_values("timestamp", kind="stable").drop_duplicates("user_id").set_index("user_id")["history"]
    users = sorted(set(clicks.index) | set(first.index))
    before = {u: history_list(str(first.get(u, "") or "")) for u in users}
    items = pd.Series({u: before[u] + clicks.get(u, []) for u in users}, dtype=object)
    stamps = pd.Series({u: [float("nan")] * len(before[u]) + times.get(u, []) for u in users}, dtype=object)
    return items, stamps


def hold_out_last(sequences: pd.Series, times: pd.Series, usable: Container[str], users: int | str | None = AUTO,
                  ) -> tuple[pd.Series, pd.Series, list[HeldOut]]:
    """(sequences and times without the held-out consumptions, the held-out ones): the last usable consumption
    of each of the `users` users (None = every user; "auto" = `validation_size` of the log) whose last one is the
    most recent, among the users with at least two usable consumptions (`usable`: the items a model can rank; the
    others stay in place)."""
    if users == AUTO:
        users = validation_size(sum(len(seq) for seq in sequences))
    latest = {}
    for user, seq in sequences.items():
        keep = [k for k, i in enumerate(seq) if i in usable]
        if len(keep) >= 2:
            stamp = times[user][keep[-1]]
            latest[user] = (stamp if np.isfinite(stamp) else -np.inf, keep)
    chosen = sorted(latest, key=lambda u: latest[u][0], reverse=True)[:users]
    held, seqs, stamps = [], sequences.copy(), times.copy()
    for user in chosen:
        keep = latest[user][1]
        last = keep[-1]
        held.append(HeldOut(str(user), [sequences[user][k] for k in keep[:-1]], sequences[user][last], float(times[user][last])))
        seqs[user] = sequences[user][:last] + sequences[user][last + 1 :]
        stamps[user] = times[user][:last] + times[user][last + 1 :]
    return seqs, stamps, held
