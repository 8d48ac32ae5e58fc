"""Evaluation protocols: which candidates each holdout impression is ranked among.

impressions  the candidates the log shows (MIND): the clicks among what was really on screen.
sampled      each held-out event against N sampled negatives (leave-last-out with sampled negatives,
             as in the literature): the list protocol of positive-only logs, and for impression logs
             each holdout click too (`eval.sampled_on_impressions`); the negatives are drawn once,
             with a seed, so every model ranks the same lists and a run twice gives the same numbers.
catalogue    every item already known at the impression's time, minus every item the user consumed before
             it (however long ago, not only the history window a model reads): what a production retriever faces. Pair scorers (cross-encoder) cannot score thousands of items
             per user, so they re-rank the top of a retriever there (retrieve-then-rerank).

`candidate_frame` rows: impression_id, user_id, item_id, label (1 = positive), history.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from llmrec.data.context import consumed_before, instants
from llmrec.data.contract import Dataset, candidate_frame  # noqa: F401  (candidate_frame re-exported for callers)

IMPRESSIONS, SAMPLED, CATALOGUE = "impressions", "sampled", "catalogue"


def list_protocol(dataset: Dataset) -> str:
    """The name of the protocol that ranks each impression's own (logged or sampled) candidates."""
    return IMPRESSIONS if dataset.source.logged_negatives else SAMPLED


def catalogue_frame(holdout: Dataset, log: Dataset, max_impressions: int, seed: int) -> pd.DataFrame:
    """Each of (at most `max_impressions`, seeded) holdout impressions paired with the whole catalogue.

    The catalogue at time t = items first seen in `log` before t, plus the impression's positives; every item
    the user consumed before t is removed (`consumed_before`: known, not a recommendation).
    """
    positives = holdout.interactions[holdout.interactions["label"] == 1]
    imps = holdout.impressions[holdout.impressions["impression_id"].isin(positives["impression_id"])]
    imps = imps.sort_values("impression_id", kind="stable")
    if max_impressions and len(imps) > max_impressions:
        imps = imps.iloc[np.sort(np.random.default_rng(seed).choice(len(imps), max_impressions, replace=False))]
    first_seen = log.interactions.groupby("item_id", sort=False)["timestamp"].min().sort_values(kind="stable")
    known = first_seen.index.to_numpy()
    known_times = instants(first_seen)
    pos_by_imp = positives.groupby("impression_id")["item_id"].agg(list)
    consumed = consumed_before(log, imps)
    parts = []
    for imp, user, ts, history, seen in zip(imps["impression_id"], imps["user_id"], instants(imps["timestamp"]), imps["history"], consumed):
        available = known[: int(np.searchsorted(known_times, ts, side="left"))]
        pos = pos_by_imp.get(imp, [])
        cands = np.union1d(available, pos)
        if seen:
            cands = cands[~np.isin(cands, list(seen - set(pos)))]
        parts.append(
            pd.DataFrame(
                {
                    "impression_id": imp,
                    "user_id": user,
                    "item_id": cands,
                    "label": np.isin(cands, pos).astype(np.int8),
                    "history": history,
                }
            )
        )
    if not parts:
        return pd.DataFrame(columns=["impression_id", "user_id", "item_id", "label", "history"])
    return pd.concat(parts, ignore_index=True)


def sampled_frame(holdout: Dataset, log: Dataset, negatives: int, seed: int) -> pd.DataFrame:
    """Each holdout positive of an impression log against `negatives` sampled negatives (the `sampled`
    protocol of positive-only logs, so both kinds of data are scored the same way as well).

    Negatives come from items seen in `log` before the impression, never the user's own positives
    or history items; drawn once with the seed.
    """
    from llmrec.data.context import sample_negatives

    pos = holdout.interactions.loc[holdout.interactions["label"] == 1, ["impression_id", "user_id", "item_id", "timestamp"]]
    if pos.empty:
        return pd.DataFrame(columns=["impression_id", "user_id", "item_id", "label", "history"])
    pos = pos.sort_values(["impression_id", "item_id"], kind="stable").reset_index(drop=True)
    history = pos["impression_id"].map(holdout.impressions.set_index("impression_id")["history"]).fillna("").astype(str)
    pseudo = pos.assign(impression_id=pos["impression_id"].astype(str) + "#" + pos.groupby("impression_id").cumcount().astype(str),
                        history=history.to_numpy())
    drawn = sample_negatives(log, pseudo[["impression_id", "user_id", "timestamp"]], negatives + HISTORY_MARGIN, seed)
    seen = {imp: set(h.split()) | {item} for imp, h, item in zip(pseudo["impression_id"], pseudo["history"], pseudo["item_id"])}
    drawn = drawn[[item not in seen[imp] for imp, item in zip(drawn["impression_id"], drawn["item_id"])]]
    drawn = drawn.groupby("impression_id", sort=False).head(negatives)
    frame = pd.concat([pseudo.assign(label=np.int8(1))[["impression_id", "user_id", "item_id", "label"]],
                       drawn[["impression_id", "user_id", "item_id", "label"]]], ignore_index=True)
    frame = frame.merge(pseudo[["impression_id", "history"]], on="impression_id", how="left")
    return frame.sort_values(["impression_id", "label"], ascending=[True, False], kind="stable").reset_index(drop=True)


HISTORY_MARGIN = 50   # extra draws per positive, so dropping history items still leaves `negatives`


def rerank_scores(base: np.ndarray, frame: pd.DataFrame, top: int, scorer) -> np.ndarray:
    """Scores where `scorer` re-ranks each impression's `top` rows by `base`; the rest keep `base` order below them."""
    order = pd.DataFrame({"imp": frame["impression_id"].to_numpy(), "base": base, "row": np.arange(len(frame))})
    order = order.sort_values(["imp", "base", "row"], ascending=[True, False, True], kind="stable")
    head = order.groupby("imp", sort=False).head(top)["row"].to_numpy()
    scores = base.astype(float) - (np.nanmax(np.abs(base)) + 1.0) * 2  # everything below the re-ranked head
    if len(head):
        reranked = np.asarray(scorer(frame.iloc[head].reset_index(drop=True)), dtype=float)
        scores[head] = reranked - reranked.min() + 1.0 if len(reranked) else reranked
    return scores
