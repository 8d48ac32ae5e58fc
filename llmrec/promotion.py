"""Promotion policy: turn the drift verdict and the challenger-vs-champion evidence into one decision.

Rules, first match wins (the `rule` field of the decision names the one that fired):

validation-failed                 the data failed validation: nothing moves (ALERT)
first-champion-beats-baselines    no champion yet, the challenger beats every required baseline: promote
first-champion-below-baseline     no champion yet, the challenger does not: nothing is served (ALERT)
champion-not-evaluated            the champion was not scored on this holdout: keep it (ALERT if drift)
no-drift-champion-healthy         no drift and the champion is healthy: keep it, "no action"
challenger-below-baseline         retrain needed, the challenger does not beat the baselines: keep (ALERT)
challenger-beats-champion         retrain needed, the lower bound of the paired difference clears the margin: promote
champion-holds                    retrain needed, the challenger is not better beyond the margin: keep (ALERT)
under-trained-challenger          a rule above would promote, but the time limit stopped the challenger's training
                                  before its validation levelled off and it does not beat every scored baseline
                                  (not only the required ones): keep / nothing served (ALERT). An under-trained
                                  challenger that wins anyway is promoted, and the reasons say so.

"Retrain needed" = drift detected, or the champion is unhealthy (it no longer beats the required
baselines on the current holdout, or lost more than `max_drop` since it was registered), or no
drift verdict exists. An ALERT keeps the champion in service and says so loudly: the pipeline
records it, the CLI exits non-zero and the Prefect flow ends Failed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

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
    retrain_needed: bool = False    # drift, an unhealthy champion, or no verdict: the challenger had to be judged
    alert: bool = False             # someone must look: the champion stays although it should be replaced
    alert_message: str | None = None
    intervals: dict[str, list[float]] = field(default_factory=dict)  # ranker -> [low, high] of `metric`
    champion_registered_value: float | None = None  # the champion's `metric` when it was registered
    thresholds: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        head = f"decision: {self.action.upper()} (rule: {self.rule})"
        lines = [head, *(f"  - {r}" for r in self.reasons)]
        if self.alert:
            lines.append(f"ALERT: {self.alert_message}")
        return "\n".join(lines)


def drift_summary(verdict: dict | None) -> dict | None:
    """The part of a drift verdict a decision record keeps (the full verdict is drift.json)."""
    if verdict is None:
        return None
    if verdict.get("skipped"):
        return {"drift_detected": False, "skipped": verdict["skipped"]}
    features = verdict.get("features", {})
    out: dict[str, Any] = {
        "drift_detected": bool(verdict.get("drift_detected")),
        "share_drifted": verdict.get("share_drifted"),
        "threshold": verdict.get("threshold"),
        "drifted_features": {n: features.get(n, {}).get("score") for n in verdict.get("drifted_features", [])},
        "signals": verdict.get("signals", {}),
        "decide_on": verdict.get("decide_on"),
        "reasons": verdict.get("reasons", []),
        "champion_version": verdict.get("champion_version"),
    }
    for name in ("embedding", "prediction"):
        signal = verdict.get(name)
        if signal is not None:
            keep = ("drifted", "score", "method", "threshold", "n_reference", "n_current", "skipped")
            out[name] = {k: signal[k] for k in keep if k in signal}
    return out


def decide(
    metrics: dict[str, dict[str, float]],
    params: PromotionParams,
    *,
    challenger_version: str | None,
    champion_version: str | None,
    drift: dict | None,
    comparison: dict | None = None,
    intervals: dict[str, list[float]] | None = None,
    champion_registered_value: float | None = None,
    validation_ok: bool = True,
    training: dict | None = None,
) -> Decision:
    """Decide on the challenger from holdout metrics of `model`, the baselines and (if scored) `champion`.

    `drift`: the drift verdict (`DriftVerdict.to_dict()`, or {"skipped": ...}); None = no verdict.
    `comparison`: the paired bootstrap of challenger - champion on the holdout; its lower bound must
    clear `params.min_gain` (without it, the plain gain must), so a gain within noise never promotes.
    `intervals`: bootstrap intervals of `params.metric` per ranker, recorded with the decision.
    `champion_registered_value`: the champion's metric at its registration, for the health check.
    `training`: the challenger's training record (`under_trained`, `note`), for the under-trained rule.
    """
    metric = params.metric
    value = metrics["model"][metric]
    scored = {k: v[metric] for k, v in metrics.items() if k not in ("model", "champion")}
    baselines = {k: v for k, v in scored.items() if k in params.must_beat} or scored
    best_name = max(baselines, key=baselines.get)
    best_value = baselines[best_name]
    intervals = intervals or {}
    reasons = [
        f"challenger {metric} = {value:.4f}{_ci(intervals.get('model'))}; best required baseline "
        f"({', '.join(sorted(baselines))}) {best_name} = {best_value:.4f}{_ci(intervals.get(best_name))}"
    ]
    stronger = {k: v for k, v in scored.items() if k not in baselines and v >= value}
    if stronger:
        listed = ", ".join(f"{k} {v:.4f}" for k, v in sorted(stronger.items(), key=lambda kv: -kv[1]))
        reasons.append(f"note: baselines not in promotion.must_beat score at least as high: {listed}")
    drifted = _drift_reason(drift, reasons)
    champion_value = metrics.get("champion", {}).get(metric) if champion_version else None
    alert: str | None = None
    retrain = True  # the challenger has to be judged (every branch below that says otherwise sets False)

    if not validation_ok:
        action, rule, retrain = (KEEP if champion_version else REJECT), "validation-failed", False
        reasons.append("the data failed validation: nothing moves")
        alert = "the data failed validation; fix it (see the validation report) before anything is promoted"
    elif champion_version is None:
        if value > best_value:
            action, rule = PROMOTE, "first-champion-beats-baselines"
            reasons.append("no champion yet and the challenger beats every required baseline")
        else:
            action, rule = REJECT, "first-champion-below-baseline"
            reasons.append("no champion yet, and the challenger does not beat the baselines: nothing is served")
            alert = f"no model is served: the first challenger v{challenger_version} does not beat {best_name}"
    elif champion_value is None:
        action, rule = KEEP, "champion-not-evaluated"
        reasons.append(
            f"champion v{champion_version} was not scored on this holdout, so the challenger cannot replace it: "
            "run the evaluation with the champion (the `retrain` flow does)"
        )
        retrain = bool(drifted)
        if drifted:
            alert = f"drift detected but champion v{champion_version} was not evaluated, so it stays unjudged"
    else:
        gain = value - champion_value
        reasons.append(
            f"champion v{champion_version} {metric} = {champion_value:.4f}{_ci(intervals.get('champion'))} "
            f"on the same holdout (gain {gain:+.4f})"
        )
        sick = _health_problems(champion_value, best_name, best_value, champion_registered_value, params.max_drop)
        reasons.extend(f"champion unhealthy: {s}" for s in sick)
        evidence = gain
        if comparison is not None:
            evidence = comparison["low"]
            reasons.append(
                f"paired difference {comparison['difference']:+.4f}, {comparison['confidence']:.0%} interval "
                f"[{comparison['low']:+.4f}, {comparison['high']:+.4f}] over {comparison['impressions']} impressions"
            )
        what = "the interval's lower bound" if comparison is not None else "the gain"
        if drifted is False and not sick:
            action, rule, retrain = KEEP, "no-drift-champion-healthy", False
            reasons.append(f"no action: no drift and champion v{champion_version} is healthy, so it stays")
        elif value <= best_value:
            action, rule = KEEP, "challenger-below-baseline"
            reasons.append(f"retrain needed ({_why(drifted, sick)}), but the challenger does not beat the baselines")
            alert = (f"retrain needed ({_why(drifted, sick)}) but challenger v{challenger_version} does not beat "
                     f"{best_name}: champion v{champion_version} stays")
        elif evidence > params.min_gain:
            action, rule = PROMOTE, "challenger-beats-champion"
            reasons.append(f"retrain needed ({_why(drifted, sick)}); {what} ({evidence:+.4f}) clears the required "
                           f"margin {params.min_gain}")
        else:
            action, rule = KEEP, "champion-holds"
            reasons.append(f"retrain needed ({_why(drifted, sick)}); {what} ({evidence:+.4f}) does not clear the "
                           f"required margin {params.min_gain}: the champion stays")
            alert = (f"retrain needed ({_why(drifted, sick)}) but challenger v{challenger_version} is not better than "
                     f"champion v{champion_version} beyond the margin ({what} {evidence:+.4f} <= {params.min_gain})")
    if training and training.get("under_trained"):
        reasons.append(f"the challenger is {training.get('note') or 'under-trained'}")
        if action == PROMOTE:
            above = [k for k, v in scored.items() if v >= value]
            if above:
                action, rule = (KEEP if champion_version else REJECT), "under-trained-challenger"
                reasons.append(f"an under-trained challenger is promoted only if it wins anyway; it does not beat "
                               f"{', '.join(sorted(above))}")
                alert = (f"challenger v{challenger_version} is under-trained ({training.get('note')}) and does not beat "
                         f"{', '.join(sorted(above))}: retrain with a longer train.max_minutes or on a less loaded machine")
            else:
                reasons.append("it wins anyway: it beats every scored baseline" + (" and the champion" if champion_version else ""))
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
        drift=drift_summary(drift),
        comparison=comparison,
        retrain_needed=retrain,
        alert=alert is not None,
        alert_message=alert,
        intervals={k: list(v) for k, v in intervals.items()},
        champion_registered_value=champion_registered_value,
        thresholds={"promotion": params.model_dump()},
    )


def _ci(interval: list[float] | tuple[float, float] | None) -> str:
    return "" if not interval else f" [{interval[0]:.4f}, {interval[1]:.4f}]"


def _drift_reason(drift: dict | None, reasons: list[str]) -> bool | None:
    """True / False when a verdict says so, None when there is none; adds the reason."""
    if drift is None:
        reasons.append("no drift verdict: the challenger is judged against the champion")
        return None
    if drift.get("skipped"):
        reasons.append(f"drift not measured: {drift['skipped']}")
        return False
    if drift.get("drift_detected"):
        why = "; ".join(drift.get("reasons", [])) or ", ".join(drift.get("drifted_features", [])) or "see drift.json"
        reasons.append(f"drift detected since the champion's data: {why}")
        return True
    reasons.append(f"no drift detected since the champion's data (share of drifted features {drift.get('share_drifted', 0):.2f})")
    return False


def _health_problems(
    value: float, best_name: str, best_value: float, registered: float | None, max_drop: float
) -> list[str]:
    problems = []
    if value <= best_value:
        problems.append(f"it no longer beats {best_name} ({value:.4f} <= {best_value:.4f})")
    if registered is not None and registered - value > max_drop:
        problems.append(f"it lost {registered - value:.4f} since its registration ({registered:.4f}), more than {max_drop}")
    return problems


def _why(drifted: bool | None, sick: list[str]) -> str:
    parts = []
    if drifted:
        parts.append("drift")
    elif drifted is None:
        parts.append("no drift verdict")
    if sick:
        parts.append("champion unhealthy")
    return " and ".join(parts) or "retrain requested"


NO_ACTION, RETRAIN_NEEDED = "no action", "retrain needed"


def monitor_decision(verdict: dict | None, champion_version: str | None, thresholds: Any = None) -> dict[str, Any]:
    """What a new batch means: "no action" (no drift) or "retrain needed" (drift, or no champion yet).

    Only the data speaks here (a batch carries no evaluation of a challenger); the retrain run that
    follows applies `decide` to the challenger it trains.
    """
    limits = {"drift": thresholds.model_dump() if hasattr(thresholds, "model_dump") else dict(thresholds or {})}
    if champion_version is None:
        reasons = ["no champion yet: train and promote a first model"]
        action, rule = RETRAIN_NEEDED, "no-champion"
    elif verdict is None or verdict.get("skipped"):
        reasons = [f"drift not measured: {(verdict or {}).get('skipped', 'no verdict')}"]
        action, rule = NO_ACTION, "drift-not-measured"
    elif verdict.get("drift_detected"):
        reasons = [f"drift detected since champion v{champion_version}'s data: {'; '.join(verdict.get('reasons', []))}"]
        action, rule = RETRAIN_NEEDED, "drift-detected"
    else:
        reasons = [f"no drift since champion v{champion_version}'s data (share of drifted features "
                   f"{verdict.get('share_drifted', 0):.2f} < {verdict.get('threshold')}; "
                   f"no drift in {', '.join(verdict.get('decide_on') or [])})"]
        reasons += [f"noted, not deciding (drift.decide_on): {r}" for r in verdict.get("reasons", [])]
        action, rule = NO_ACTION, "no-drift"
    return {
        "action": action, "rule": rule, "reasons": reasons, "retrain_needed": action == RETRAIN_NEEDED,
        "champion_version": champion_version, "drift": drift_summary(verdict), "thresholds": limits,
        "summary": f"monitor: {action.upper()} (rule: {rule})\n" + "\n".join(f"  - {r}" for r in reasons),
    }
