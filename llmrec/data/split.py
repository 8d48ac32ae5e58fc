"""Train/holdout splits.

temporal        the last days are the holdout; nothing in training comes after the cutoff
                (impression logs such as MIND, where every impression has candidates to rank).
leave-last-out  each user's last event is the holdout, everything before it trains (positive-only
                logs such as MovieLens, where days of the calendar are a poor unit). Other users'
                events after a holdout event may still train: the usual caveat of this protocol.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from llmrec.data.contract import UNLABELED, Dataset
from llmrec.errors import DataError


@dataclass
class Split:
    train: Dataset
    holdout: Dataset
    cutoff: pd.Timestamp  # holdout = impressions at or after this instant

    def describe(self) -> dict[str, object]:
        return {
            "cutoff": self.cutoff.isoformat(),
            "train_impressions": len(self.train.impressions),
            "holdout_impressions": len(self.holdout.impressions),
            "train_start": self.train.impressions["timestamp"].min().isoformat(),
            "train_end": self.train.impressions["timestamp"].max().isoformat(),
            "holdout_end": self.holdout.impressions["timestamp"].max().isoformat(),
        }


def temporal_split(dataset: Dataset, holdout_days: int) -> Split:
    """Hold out the last `holdout_days` calendar days (UTC) of labelled impressions."""
    labelled = dataset.interactions.loc[dataset.interactions["label"] != UNLABELED, "impression_id"].unique()
    imps = dataset.impressions[dataset.impressions["impression_id"].isin(labelled)]
    if imps.empty:
        raise DataError("no labelled impressions to split", fix="training needs a labelled split (MIND train/dev)")
    last_day = imps["timestamp"].max().floor("D")
    cutoff = last_day - pd.Timedelta(days=holdout_days - 1)
    is_holdout = imps["timestamp"] >= cutoff
    if is_holdout.all():
        raise DataError(
            f"the data spans fewer than {holdout_days + 1} days, so nothing is left to train on",
            where=f"data.holdout_days = {holdout_days}",
            fix="lower data.holdout_days or add older data",
        )
    return Split(
        train=dataset.restrict(imps.loc[~is_holdout, "impression_id"]),
        holdout=dataset.restrict(imps.loc[is_holdout, "impression_id"]),
        cutoff=cutoff,
    )


def time_slice(
    dataset: Dataset,
    start: pd.Timestamp | None = None,
    end: pd.Timestamp | None = None,
    inclusive_end: bool = False,
) -> Dataset:
    """Impressions with start < timestamp < end (or <= end when inclusive_end)."""
    ts = dataset.impressions["timestamp"]
    keep = pd.Series(True, index=ts.index)
    if start is not None:
        keep &= ts > start
    if end is not None:
        keep &= (ts <= end) if inclusive_end else (ts < end)
    return dataset.restrict(dataset.impressions.loc[keep, "impression_id"])


def leave_last_out_split(dataset: Dataset, min_events: int = 2) -> Split:
    """Hold out each user's last labelled impression (users with fewer than `min_events` all train)."""
    labelled = dataset.interactions.loc[dataset.interactions["label"] != UNLABELED, "impression_id"].unique()
    imps = dataset.impressions[dataset.impressions["impression_id"].isin(labelled)]
    if imps.empty:
        raise DataError("no labelled impressions to split", fix="training needs labelled events")
    ordered = imps.sort_values(["user_id", "timestamp"], kind="stable")  # same-second events: the source's order
    n = ordered.groupby("user_id", sort=False)["impression_id"].transform("size")
    last = ~ordered.duplicated("user_id", keep="last") & (n >= min_events)
    if not last.any():
        raise DataError(
            f"no user has {min_events} or more events, so nothing can be held out",
            fix="use more data, or data.split: temporal",
        )
    holdout = ordered.loc[last, "impression_id"]
    return Split(
        train=dataset.restrict(ordered.loc[~last, "impression_id"]),
        holdout=dataset.restrict(holdout),
        cutoff=ordered.loc[last, "timestamp"].min(),
    )


def make_split(dataset: Dataset, how: str, holdout_days: int) -> Split:
    """The split named by data.split; "auto" = leave-last-out for positive-only logs, else temporal."""
    if how == "auto":
        how = "temporal" if dataset.source.logged_negatives else "leave-last-out"
    if how == "leave-last-out":
        return leave_last_out_split(dataset)
    return temporal_split(dataset, holdout_days)
