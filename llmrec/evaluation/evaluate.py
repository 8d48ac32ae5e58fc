"""Offline evaluation on the holdout impressions: the model next to baselines (and the champion)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from llmrec import metrics
from llmrec.data.contract import UNLABELED, Dataset
from llmrec.evaluation import protocols
from llmrec.evaluation.baselines import popularity_scorer, random_scorer  # noqa: F401  (re-exported for callers)
from llmrec.evaluation.protocols import candidate_frame  # noqa: F401  (re-exported for callers)
from llmrec.evaluation.results import EvalReport, ProtocolResult  # noqa: F401  (re-exported for callers)
from llmrec.models.cross_encoder import CrossEncoder

Scorer = Callable[[pd.DataFrame], np.ndarray]


def sample_impressions(holdout: Dataset, max_impressions: int, seed: int) -> Dataset:
    """A seeded sample of labelled holdout impressions (all when max_impressions is 0)."""
    labelled = holdout.interactions.loc[holdout.interactions["label"] != UNLABELED, "impression_id"].unique()
    labelled = np.sort(labelled)
    if max_impressions and len(labelled) > max_impressions:
        labelled = np.random.default_rng(seed).choice(labelled, size=max_impressions, replace=False)
    return holdout.restrict(pd.Index(labelled))


def model_scorer(model: CrossEncoder, items: pd.DataFrame, batch_size: int, progress: bool = False) -> Scorer:
    """Score candidates with a cross-encoder, rendering texts exactly as in training."""
    return model.scorer(items, batch_size, progress)


DESCRIPTIONS = {
    protocols.IMPRESSIONS: "Each holdout impression's logged candidates (what was on screen); MIND's per-impression metrics.",
    protocols.SAMPLED: "Each held-out event ranked against sampled negatives (seeded, the same for every ranker).",
    protocols.CATALOGUE: "Each holdout impression against every item known at its time, minus the user's history. "
    "Pair scorers re-rank the top of a retriever (named in brackets).",
}


def _score_protocol(
    name: str,
    frame: pd.DataFrame,
    scorers: dict[str, Scorer],
    ks: list[int],
    primary: str,
    seed: int,
    confidence: float,
    popularity: pd.Series | None = None,
) -> tuple[ProtocolResult, dict[str, np.ndarray]]:
    """Score `frame` with every ranker; with `popularity`, also catalogue coverage and popularity bias of the top 10."""
    from llmrec.evaluation.stats import bootstrap_intervals

    result = ProtocolResult(name, DESCRIPTIONS[name], {}, n_candidates=len(frame))
    scores: dict[str, np.ndarray] = {}
    for ranker, scorer in scorers.items():
        scores[ranker] = np.asarray(scorer(frame), dtype=float)
        per = metrics.impression_metrics(frame.assign(score=scores[ranker]), ks)
        result.per_impression[ranker] = per
        result.metrics[ranker] = metrics.summarize(per)
        cols = [c for c in per.columns if c != "impression_id"]
        result.intervals[ranker] = bootstrap_intervals(per, cols, confidence=confidence, seed=seed)
        result.skipped = int(per.attrs.get("skipped", 0))
        result.n_impressions = len(per)
        if popularity is not None:
            top = metrics.top_k(frame.assign(score=scores[ranker]), 10)
            result.metrics[ranker]["coverage@10"] = metrics.coverage(top, frame["item_id"].nunique())
            result.metrics[ranker]["pop_bias@10"] = metrics.popularity_bias(top, popularity)
    return result, scores


def segment_labels(frame: pd.DataFrame, train: Dataset, items: pd.DataFrame) -> pd.DataFrame:
    """Per impression: history length bucket, cold/warm positive item, category of the positive."""
    train_items = set(train.interactions.loc[train.interactions["label"] == 1, "item_id"])
    for history in train.impressions["history"]:
        train_items.update(history.split())
    imp = frame.drop_duplicates("impression_id")[["impression_id", "history"]].set_index("impression_id")
    n_hist = imp["history"].fillna("").str.split().str.len().fillna(0)
    buckets = pd.cut(n_hist, [-1, 0, 4, 19, np.inf], labels=["0", "1-4", "5-19", "20+"])  # ordered categories
    pos = frame[frame["label"] == 1]
    cold = (~pos["item_id"].isin(train_items)).groupby(pos["impression_id"]).all()
    category = items.drop_duplicates("item_id").set_index("item_id")["category"]
    first_cat = pos.groupby("impression_id")["item_id"].first().map(category).fillna("unknown")
    top_cats = first_cat.value_counts().index[:6]
    return pd.DataFrame(
        {
            "history length": buckets,
            "positive item": cold.reindex(imp.index).map({True: "cold (unseen in training)", False: "warm"}),
            "category": first_cat.reindex(imp.index).where(lambda c: c.isin(top_cats), "other"),
        }
    )


def _segments(result: ProtocolResult, labels: pd.DataFrame, metric: str) -> pd.DataFrame:
    rows = []
    for ranker, per in result.per_impression.items():
        joined = per.set_index("impression_id")[[metric]].join(labels, how="inner")
        for kind in labels.columns:
            for segment, group in joined.groupby(kind, sort=True, observed=True):  # categories keep their order
                rows.append({"ranker": ranker, "kind": kind, "segment": segment, "n": len(group), "value": float(group[metric].mean())})
    return pd.DataFrame(rows)


WARM, COLD = "warm", "cold (unseen in training)"
WARM_COLD_VERSUS = ("champion", "two_tower", "ease", "itemknn", "sasrec", "tfidf", "zero_shot")  # model - these, within each segment


def _warm_cold(result: ProtocolResult, frame: pd.DataFrame, train: Dataset, items: pd.DataFrame, metric: str,
               seed: int, confidence: float) -> tuple[list[dict], list[dict], pd.Series]:
    """Per ranker: the metric on impressions whose positive is warm / cold; the model's paired differences; and the
    segment of each impression (impression_id -> segment)."""
    from llmrec.evaluation.stats import paired_bootstrap

    labels = segment_labels(frame, train, items)["positive item"].rename("segment")
    rows, comparisons = [], []
    for ranker, per in result.per_impression.items():
        joined = per.set_index("impression_id")[[metric]].join(labels, how="inner")
        for segment, group in joined.groupby("segment", sort=True):
            rows.append({"protocol": result.name, "segment": segment, "ranker": ranker, "n": len(group), "value": float(group[metric].mean())})
    model = result.per_impression.get("model")
    if model is None:
        return rows, comparisons, labels
    for segment in (WARM, COLD):
        ids = set(labels.index[labels == segment])
        if not ids:
            continue
        mine = model[model["impression_id"].isin(ids)]
        for other in WARM_COLD_VERSUS:
            if other in result.per_impression and len(mine):
                theirs = result.per_impression[other]
                comp = paired_bootstrap(mine, theirs[theirs["impression_id"].isin(ids)], metric, confidence=confidence, seed=seed)
                comparisons.append({"protocol": result.name, "segment": segment, "versus": other, **comp})
    return rows, comparisons, labels


def evaluate(
    holdout: Dataset,
    train: Dataset,
    log: Dataset,
    scorers: dict[str, Scorer],
    *,
    ks: list[int],
    primary: str,
    seed: int,
    catalogue_scorers: list[str] | None = None,
    rerankers: dict[str, tuple[str, int]] | None = None,
    catalogue_impressions: int = 100,
    confidence: float = 0.95,
    sampled_negatives: int = 0,
) -> EvalReport:
    """Score the holdout with every ranker under each protocol that applies.

    `holdout` has its context (histories, sampled negatives) filled in. The catalogue protocol (with
    `catalogue_impressions` > 0) and, for impression logs, the sampled protocol (with `sampled_negatives`
    > 0) run the rankers in `catalogue_scorers` directly and each ranker in `rerankers` as a re-ranker of
    (retriever name, top-N). Warm/cold tables and paired comparisons come for every protocol.
    """
    from llmrec.data.context import first_seen_hours, with_item_age

    ks_all = sorted(set(ks) | {10})
    list_name = protocols.list_protocol(holdout)
    first_seen = first_seen_hours(log)
    consumed_only = not log.source.logged_negatives
    aged = lambda f: with_item_age(f, holdout.impressions, first_seen, consumed_only) if len(f) else f  # noqa: E731  (item freshness, for models that use it)
    frame = aged(protocols.candidate_frame(holdout))
    main, main_scores = _score_protocol(list_name, frame, scorers, ks_all, primary, seed, confidence)
    report = EvalReport({list_name: main}, primary, segment_protocol=list_name, confidence=confidence)
    report.baselines = {name: s.setting for name, s in scorers.items() if getattr(s, "setting", "")}
    report.holdout = {"impressions": main.n_impressions, "candidates": len(frame), "protocol": list_name}

    curve = []
    for ranker, score in main_scores.items():
        per = metrics.impression_metrics(frame.assign(score=score), list(range(1, 21)))
        curve += [{"ranker": ranker, "k": k, "ndcg": float(per[f"ndcg@{k}"].mean())} for k in range(1, 21)]
    report.ndcg_curve = pd.DataFrame(curve)
    if "model" in main_scores:
        sample = frame[["label"]].assign(score=main_scores["model"])
        report.score_samples = sample.sample(min(len(sample), 20_000), random_state=seed)
    report.segments = _segments(main, segment_labels(frame, train, holdout.items), primary)
    warm_cold, comparisons, labels = _warm_cold(main, frame, train, holdout.items, primary, seed, confidence)
    report.warm_cold_labels[list_name] = labels

    def vector_and_reranked() -> dict[str, Scorer]:
        chosen = {n: scorers[n] for n in (catalogue_scorers or []) if n in scorers}
        for name, (retriever, top) in (rerankers or {}).items():
            if name in scorers and retriever in scorers:
                chosen[f"{name} [{retriever} top-{top}]"] = _reranker(scorers[retriever], scorers[name], top)
        return chosen

    extra: list[tuple[str, pd.DataFrame, pd.Series | None]] = []
    if sampled_negatives and list_name == protocols.IMPRESSIONS and catalogue_scorers:
        extra.append((protocols.SAMPLED, aged(protocols.sampled_frame(holdout, log, sampled_negatives, seed)), None))
    if catalogue_scorers and catalogue_impressions:
        clicks = train.interactions.loc[train.interactions["label"] == 1, "item_id"].value_counts()
        extra.append((protocols.CATALOGUE, aged(protocols.catalogue_frame(holdout, log, catalogue_impressions, seed)), clicks))
    for name, extra_frame, popularity in extra:
        if extra_frame.empty:
            continue
        result, _ = _score_protocol(name, extra_frame, vector_and_reranked(), ks_all, primary, seed, confidence, popularity)
        report.protocols[name] = result
        rows, comps, labels = _warm_cold(result, extra_frame, train, holdout.items, primary, seed, confidence)
        report.warm_cold_labels[name] = labels
        warm_cold += rows
        comparisons += comps
    report.warm_cold = pd.DataFrame(warm_cold)
    report.warm_cold_comparisons = comparisons
    return report


def _reranker(retriever: Scorer, ranker: Scorer, top: int) -> Scorer:
    def score(frame: pd.DataFrame) -> np.ndarray:
        return protocols.rerank_scores(np.asarray(retriever(frame), dtype=float), frame, top, ranker)

    return score
