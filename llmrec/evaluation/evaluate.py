"""Offline evaluation on the holdout impressions: the model next to baselines (and the champion)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from llmrec.data.contract import UNLABELED, Dataset, history_list
from llmrec.evaluation import metrics
from llmrec.models.cross_encoder import CrossEncoder
from llmrec.models.text import item_texts, user_text

Scorer = Callable[[pd.DataFrame], np.ndarray]


def sample_impressions(holdout: Dataset, max_impressions: int, seed: int) -> Dataset:
    """A seeded sample of labelled holdout impressions (all when max_impressions is 0)."""
    labelled = holdout.interactions.loc[holdout.interactions["label"] != UNLABELED, "impression_id"].unique()
    labelled = np.sort(labelled)
    if max_impressions and len(labelled) > max_impressions:
        labelled = np.random.default_rng(seed).choice(labelled, size=max_impressions, replace=False)
    return holdout.restrict(pd.Index(labelled))


def candidate_frame(holdout: Dataset) -> pd.DataFrame:
    """One row per (impression, candidate) with the label and the user's history."""
    return holdout.interactions[["impression_id", "item_id", "label"]].merge(
        holdout.impressions[["impression_id", "history"]], on="impression_id", how="left"
    )


def model_scorer(model: CrossEncoder, items: pd.DataFrame, batch_size: int, progress: bool = False) -> Scorer:
    """Score candidates with a cross-encoder, rendering texts exactly as in training."""
    texts = item_texts(items, model.text)

    def score(frame: pd.DataFrame) -> np.ndarray:
        users = [user_text(history_list(h), texts, model.text) for h in frame["history"]]
        cands = [texts.get(i, i) for i in frame["item_id"]]
        return model.score(users, cands, batch_size=batch_size, progress=progress)

    return score


def popularity_scorer(train: Dataset) -> Scorer:
    """Clicks each item received in the training period (unseen items score 0)."""
    clicks = train.interactions.loc[train.interactions["label"] == 1, "item_id"].value_counts()

    def score(frame: pd.DataFrame) -> np.ndarray:
        return frame["item_id"].map(clicks).fillna(0).to_numpy(dtype=float)

    return score


def random_scorer(seed: int) -> Scorer:
    def score(frame: pd.DataFrame) -> np.ndarray:
        return np.random.default_rng(seed).random(len(frame))

    return score


@dataclass
class EvalReport:
    metrics: dict[str, dict[str, float]]          # ranker name -> metric -> mean
    per_impression: dict[str, pd.DataFrame] = field(default_factory=dict, repr=False)
    holdout: dict[str, object] = field(default_factory=dict)

    def table(self) -> pd.DataFrame:
        return pd.DataFrame(self.metrics).T

    def to_markdown(self, title: str = "Holdout evaluation") -> str:
        table = self.table()
        cols = [c for c in table.columns if c != "impressions"]
        lines = [f"### {title}", "", "| ranker | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
        for name, row in table.iterrows():
            lines.append(f"| {name} | " + " | ".join(f"{row[c]:.4f}" for c in cols) + " |")
        n = int(next(iter(self.metrics.values()))["impressions"]) if self.metrics else 0
        lines += ["", f"{n} holdout impressions with at least one click and one non-click."]
        return "\n".join(lines)

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "metrics.json").write_text(json.dumps({"metrics": self.metrics, "holdout": self.holdout}, indent=2))
        (folder / "report.md").write_text(self.to_markdown() + "\n")
        for name, frame in self.per_impression.items():
            frame.to_parquet(folder / f"per_impression_{name}.parquet", index=False)
        return folder


def evaluate_rankers(holdout: Dataset, scorers: dict[str, Scorer], ks: list[int]) -> EvalReport:
    """Score the same holdout candidates with every ranker and compute MIND's metrics."""
    frame = candidate_frame(holdout)
    report = EvalReport(metrics={}, holdout={"impressions": int(frame["impression_id"].nunique()), "candidates": len(frame)})
    for name, scorer in scorers.items():
        scored = frame.assign(score=scorer(frame))
        per = metrics.impression_metrics(scored, ks)
        report.metrics[name] = metrics.summarize(per)
        report.per_impression[name] = per
    return report
