"""What one evaluation found, as plain data: `evaluate` fills it, `report` renders and saves it."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd


@dataclass
class ProtocolResult:
    """Metrics of every ranker under one protocol."""

    name: str
    description: str
    metrics: dict[str, dict[str, float]]  # ranker -> metric -> mean
    intervals: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)
    per_impression: dict[str, pd.DataFrame] = field(default_factory=dict, repr=False)
    skipped: int = 0
    n_impressions: int = 0
    n_candidates: int = 0

    def to_dict(self) -> dict:
        return {
            "description": self.description,
            "metrics": self.metrics,
            "intervals": {r: {m: list(ci) for m, ci in v.items()} for r, v in self.intervals.items()},
            "skipped": self.skipped,
            "impressions": self.n_impressions,
            "candidates": self.n_candidates,
        }


@dataclass
class EvalReport:
    """Everything one evaluation found: protocols, comparisons, segments and plot data."""

    protocols: dict[str, ProtocolResult]
    primary: str
    holdout: dict[str, object] = field(default_factory=dict)
    comparisons: dict[str, dict] = field(default_factory=dict)
    segments: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False)
    segment_protocol: str = ""
    ndcg_curve: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False)
    score_samples: pd.DataFrame | None = field(default=None, repr=False)
    confidence: float = 0.95
    warm_cold: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False)  # protocol, segment, ranker, n, value
    warm_cold_comparisons: list[dict] = field(default_factory=list)           # model - other within warm / cold
    warm_cold_labels: dict[str, pd.Series] = field(default_factory=dict, repr=False)  # protocol -> impression_id -> segment
    baselines: dict[str, str] = field(default_factory=dict)  # baseline -> its chosen setting and training length

    @property
    def main(self) -> ProtocolResult:
        """The protocol the promotion policy reads: each impression's own candidates."""
        return self.protocols[self.segment_protocol]

    @property
    def metrics(self) -> dict[str, dict[str, float]]:
        return self.main.metrics

    @property
    def per_impression(self) -> dict[str, pd.DataFrame]:
        return self.main.per_impression

    def table(self) -> pd.DataFrame:
        return pd.DataFrame(self.metrics).T
