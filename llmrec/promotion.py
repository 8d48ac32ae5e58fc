"""Promotion policy: turn evaluation + drift evidence into one decision, with the reasons."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from llmrec.config import PromotionParams

PROMOTE, KEEP, REJECT = "promote", "keep", "reject"


@dataclass
class Decision:
    action: str                     # promote | keep (champion stays) | reject (no champion, not good enough)
    rule: str                       # which rule fired
    reasons: list[str]
    metric: str
    challenger_version: str | None
    champion_version: str | None
    challenger_value: float
    champion_value: float | None
    best_baseline: str
    best_baseline_value: float
    drift: dict | None = field(default=None)
    comparison: dict | None = field(default=None)

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        head = f"decision: {self.action.upper()} (rule: {self.rule})"
        return "\n".join([head, *(f"  - {r}" for r in self.reasons)])


def decide(
    metrics: dict[str, dict[str, float]],
    params: PromotionParams,
    *,
    challenger_version: str | None,
    champion_version: str | None,
    drift: dict | None,
    comparison: dict | None = None,
) -> Decision:
    """Decide on the challenger from holdout metrics of `model`, the baselines and (if any) `champion`.

    - no champion: promote when the challenger beats every baseline in `params.must_beat` on `params.metric`
      (stronger baselines outside that list are named in the reasons);
    - champion: promote when the challenger beats it by more than `params.min_gain` on the same holdout;
      with a paired `comparison` (bootstrap interval of the difference), the interval's lower bound
      must clear the margin, so a gain within noise never promotes.
    The drift verdict is recorded with the decision and named in the reasons.
    """
    metric = params.metric
    value = metrics["model"][metric]
    scored = {k: v[metric] for k, v in metrics.items() if k not in ("model", "champion")}
    baselines = {k: v for k, v in scored.items() if k in params.must_beat} or scored
    best_name = max(baselines, key=baselines.get)
    best_value = baselines[best_name]
    reasons = [f"challenger {metric} = {value:.4f}; best required baseline ({', '.join(sorted(baselines))}) {best_name} = {best_value:.4f}"]
    stronger = {k: v for k, v in scored.items() if k not in baselines and v >= value}
    if stronger:
        listed = ", ".join(f"{k} {v:.4f}" for k, v in sorted(stronger.items(), key=lambda kv: -kv[1]))
        reasons.append(f"note: baselines not in promotion.must_beat score at least as high: {listed}")
    if drift is not None:
        if drift.get("drift_detected"):
            drifted = ", ".join(drift.get("drifted_features", [])) or "none named"
            reasons.append(f"drift detected since the champion's data (share {drift.get('share_drifted', 0):.2f}; {drifted})")
        elif drift.get("n_current", 1):
            reasons.append("no drift detected since the champion's data")
    champion_value = metrics.get("champion", {}).get(metric) if champion_version else None

    if champion_version is not None and champion_value is None:
        action, rule = KEEP, "champion-not-evaluated"
        reasons.append(
            f"champion v{champion_version} was not scored on this holdout, so the challenger cannot replace it: "
            "run the evaluation with the champion (the `retrain` flow does)"
        )
    elif champion_version is None:
        if value > best_value:
            action, rule = PROMOTE, "first-champion-beats-baselines"
            reasons.append("no champion yet and the challenger beats every required baseline")
        else:
            action, rule = REJECT, "first-champion-below-baseline"
            reasons.append("no champion yet, and the challenger does not beat the baselines: nothing is served")
    else:
        gain = value - champion_value
        reasons.append(f"champion v{champion_version} {metric} = {champion_value:.4f} on the same holdout (gain {gain:+.4f})")
        evidence = gain
        if comparison is not None:
            evidence = comparison["low"]
            reasons.append(
                f"paired difference {comparison['difference']:+.4f}, {comparison['confidence']:.0%} interval "
                f"[{comparison['low']:+.4f}, {comparison['high']:+.4f}] over {comparison['impressions']} impressions"
            )
        if value <= best_value:
            action, rule = KEEP, "challenger-below-baseline"
            reasons.append("the challenger does not beat the baselines")
        elif evidence > params.min_gain:
            action, rule = PROMOTE, "challenger-beats-champion"
            what = "the interval's lower bound" if comparison is not None else "the gain"
            reasons.append(f"{what} ({evidence:+.4f}) clears the required margin {params.min_gain}")
        else:
            action, rule = KEEP, "champion-holds"
            what = "the interval's lower bound" if comparison is not None else "the gain"
            reasons.append(f"{what} ({evidence:+.4f}) does not clear the required margin {params.min_gain}: the champion stays")
    return Decision(
        action=action,
        rule=rule,
        reasons=reasons,
        metric=metric,
        challenger_version=challenger_version,
        champion_version=champion_version,
        challenger_value=value,
        champion_value=champion_value,
        best_baseline=best_name,
        best_baseline_value=best_value,
        drift=drift,
        comparison=comparison,
    )
