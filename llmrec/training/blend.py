"""How the hybrid's parts combine, chosen after training on held-out consumptions none of them trained on.

The hybrid scores a (user, item) as a sum of parts (`llmrec.models.hybrid.PARTS`): the trained text part, the
zero-shot part (the backbone as it is), the id part (a SASRec of its own), EASE's item-item score, plus the
item-age offset. Training fits them together on the training consumptions, where each part looks better than
it will on new data (EASE and the ids have seen the very consumptions they are asked about), and a part
trained for a few steps is still noise. So after training, the weight of each part per blend group (items by
their training support: no id, 1-3, 4-15, 16-63, 64+ consumptions) and the weight of the age offset are fitted
by maximum likelihood on the held-out consumptions (`llmrec.data.sequences.hold_out_last`: no part trained on
them, EASE included), each ranked against the training catalogue minus the user's history (on logs with
impressions: against its own impression's logged items). The fitted blend is kept only if it ranks the held-out
consumptions (nDCG@10, then nDCG over the whole ranking) at least as well as the model as trained and as each
part alone by more than one standard error of the paired difference, its own quality measured by cross-fitting
(each half of the cases scored by weights fitted on the other half, so the choice is not flattered by the fit);
otherwise the best of those is kept. So on held-out data the hybrid never ranks below one of its
parts, whatever the length of its training.

Every part's score is the dot product of a slice of the user vector and of the item vector, so a blend is a
weight per item column: scoring stays one dot product.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from llmrec.data.context import AGE_TOLERANCE_HOURS
from llmrec.models.hybrid import BLEND_GROUPS, PARTS, HybridNet

log = logging.getLogger(__name__)

PAD = -1
CASE_BLOCK = 256             # held-out consumptions scored at a time
MAX_FIT_LOGITS = 40_000_000  # cases x candidates x parts kept in memory to fit the blend (more cases are not used)
PRIOR = 0.01                 # L2 pull of the log-weights towards 1 (groups with few held-out consumptions stay near it)


@dataclass(frozen=True)
class HeldOut:
    """The held-out consumptions as catalogue rows, and what they are ranked against."""

    history: list[list[int]]           # per case: catalogue rows before it, oldest first
    answer: np.ndarray                 # per case: its catalogue row
    hours: np.ndarray                  # per case: its time, hours since `hours_base`
    shown: list[list[int] | None] | None = None  # per case: the impression's logged items (None: rank the catalogue)


@dataclass
class Scoring:
    """What scoring a held-out case needs besides the net: the catalogue's text vectors, id rows and first-seen times."""

    text: torch.Tensor | None
    ids: torch.Tensor
    first_seen: torch.Tensor           # hours since hours_base, NaN = unknown
    consumed_only: bool                # positive-only log: an item not consumed before the moment has no age
    device: torch.device


@dataclass
class BlendChoice:
    chosen: str                        # "fitted", "as trained" or a part's name
    ndcg: dict[str, float] = field(default_factory=dict)   # validation nDCG@10 of every candidate
    weights: dict[str, list[float]] = field(default_factory=dict)  # part -> weight per blend group (chosen)
    offsets: float = 1.0
    margin: float = 0.0                # what the fitted blend had to gain over the best fixed choice

    def describe(self) -> str:
        tried = ", ".join(f"{name} {value:.4f}" for name, value in self.ndcg.items())
        return f"blend: {self.chosen} (held-out nDCG@10: {tried}; the fitted blend had to gain more than {self.margin:.4f})"


@contextlib.contextmanager
def raw_parts(net: HybridNet) -> Iterator[None]:
    """The net with every part at weight 1 (the blend set aside), restored after."""
    blend, offsets = net.blend.clone(), net.offset_scale.clone()
    net.blend.fill_(1.0)
    net.offset_scale.fill_(1.0)
    try:
        yield
    finally:
        net.blend.copy_(blend)
        net.offset_scale.copy_(offsets)


def scored_blocks(net: HybridNet, scoring: Scoring, held: HeldOut, block: int = CASE_BLOCK,
                  ) -> Iterator[tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Per block of held-out cases, scored as at inference (eval mode, every id kept, the net's current blend):
    (each part's logits (B, N), the offsets (B, N), allowed candidates (B, N), the answers (B,))."""
    net.eval()
    device, length = scoring.device, net.config.sequence_length
    with torch.no_grad():
        vectors, inputs, bias, v_text = net.items(scoring.text, scoring.ids)
        columns = net.part_columns()
        for start in range(0, len(held.answer), block):
            stop = min(start + block, len(held.answer))
            histories = held.history[start:stop]
            index = torch.zeros(stop - start, length, dtype=torch.long)
            mask = torch.zeros(stop - start, length, dtype=torch.bool)
            for k, history in enumerate(histories):
                recent = history[-length:]
                if recent:
                    index[k, length - len(recent):] = torch.as_tensor(recent)
                    mask[k, length - len(recent):] = True
            index, mask = index.to(device), mask.to(device)
            counts = net.ease_counts([scoring.ids[torch.as_tensor(h, dtype=torch.long, device=device)] for h in histories]) \
                if net.ease_items else None  # EASE reads the whole history
            users = net.users(inputs[index], v_text[index] if v_text is not None else None, mask, last=True, ease_counts=counts)
            parts = {name: users[:, c] @ vectors[:, c].T / net.config.temperature for name, c in columns.items()}
            when = torch.as_tensor(held.hours[start:stop], dtype=torch.float32, device=device)
            ages = when.unsqueeze(1) - scoring.first_seen.unsqueeze(0)
            unseen = ages < -AGE_TOLERANCE_HOURS  # not shown yet then: no candidate (NaN compares False)
            if scoring.consumed_only:
                ages = ages.masked_fill(~(ages > AGE_TOLERANCE_HOURS), float("nan"))
            offsets = bias.unsqueeze(0) + net.age_bias(ages)
            answers = torch.as_tensor(held.answer[start:stop], dtype=torch.long, device=device)
            allowed = _allowed(histories, held.shown[start:stop] if held.shown is not None else None, unseen, answers)
            yield parts, offsets, allowed, answers


def _allowed(histories: Sequence[list[int]], shown: Sequence[list[int] | None] | None, unseen: torch.Tensor,
             answers: torch.Tensor) -> torch.Tensor:
    """Candidates of each case: its impression's logged items, or the catalogue minus its history and the unseen; the
    answer always."""
    allowed = ~unseen
    for k, history in enumerate(histories):
        if shown is not None and shown[k]:
            row = torch.zeros_like(allowed[k])
            row[torch.as_tensor(shown[k], dtype=torch.long, device=row.device)] = True
            allowed[k] = row
        elif history:
            allowed[k, torch.as_tensor(history, dtype=torch.long, device=allowed.device)] = False
    allowed[torch.arange(len(answers), device=answers.device), answers] = True
    return allowed


def ranking_quality(logits: torch.Tensor, allowed: torch.Tensor, answers: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per case: (nDCG@10, nDCG over the whole ranking) of the answer among the allowed candidates, ties in expectation
    (the answer's rank is uniform over its tie: the mean of the gains of those ranks)."""
    logits = logits.float().masked_fill(~allowed, float("-inf"))
    right = logits[torch.arange(len(answers), device=logits.device), answers].unsqueeze(1)
    greater = (logits > right).sum(1)
    last = greater + (logits == right).sum(1)  # the lowest rank the answer may take
    size = (last - greater).double()
    gains = torch.cat([torch.zeros(1, dtype=torch.float64, device=logits.device),
                       torch.cumsum(1.0 / torch.log2(torch.arange(2, logits.shape[1] + 2, dtype=torch.float64, device=logits.device)), 0)])
    full = (gains[last] - gains[greater]) / size
    at10 = (gains[last.clamp(max=10)] - gains[greater.clamp(max=10)]) / size
    return at10, full


def validation_ndcg_full(net: HybridNet, scoring: Scoring, held: HeldOut) -> float:
    """Mean nDCG over the whole ranking of the held-out consumptions (smooth enough to select a step on a few hundred
    users), scored as at inference with the net's current blend."""
    values = []
    for parts, offsets, allowed, answers in scored_blocks(net, scoring, held):
        values.append(ranking_quality(sum(parts.values()) + offsets, allowed, answers)[1])
    return float(torch.cat(values).mean()) if values else float("nan")


def choose_blend(net: HybridNet, scoring: Scoring, held: HeldOut) -> BlendChoice:
    """Fit the blend on the held-out cases, keep it only if it ranks them at least as well as the model as trained and
    as each part alone, and set the chosen one in `net` (see the module docstring)."""
    with raw_parts(net):
        cases = _collect(net, scoring, held)
    names = list(cases.parts)
    groups = torch.as_tensor(BLEND_GROUPS, device=scoring.device)[net.support[scoring.ids]]
    weights, offset = _fit(cases, groups, len(set(BLEND_GROUPS)))
    candidates: dict[str, tuple[torch.Tensor, float]] = {"fitted": (weights, offset),
                                                        "as trained": (torch.ones_like(weights), 1.0)}
    if len(names) > 1:
        for k, name in enumerate(names):
            alone = torch.zeros_like(weights)
            alone[:, k] = 1.0
            candidates[name] = (alone, 0.0)
    quality, per_case = {}, {}
    for name, (w, o) in candidates.items():
        if name == "fitted":
            at10, full = _cross_fitted_quality(cases, groups, len(set(BLEND_GROUPS)))
        else:  # nothing of these was fitted on the held-out cases: scoring them there is honest
            at10, full = ranking_quality(_blended(cases, w, o, groups), cases.allowed, cases.answers)
        per_case[name] = at10.double().cpu()
        quality[name] = (float(at10.mean()), float(full.mean()))
    simpler = max((n for n in candidates if n != "fitted"), key=lambda n: quality[n])
    gain = per_case["fitted"] - per_case[simpler]
    # the fitted blend's many weights must beat the best fixed choice by more than one standard error of the paired
    # difference: a gain within noise on the held-out cases did not hold on the next consumptions
    margin = float(gain.std() / math.sqrt(len(gain))) if len(gain) > 1 else 0.0
    best = "fitted" if float(gain.mean()) > margin else simpler
    w, o = candidates[best]
    with torch.no_grad():
        for k, name in enumerate(names):
            net.blend[:, PARTS.index(name)] = w[:, k]
        for name in set(PARTS) - set(names):
            net.blend[:, PARTS.index(name)] = 0.0
        net.offset_scale.fill_(o)
    return BlendChoice(best, {n: q[0] for n, q in quality.items()},
                       {n: [round(float(v), 4) for v in w[:, k]] for k, n in enumerate(names)}, float(o), margin)


@dataclass
class _Cases:
    parts: dict[str, torch.Tensor]     # part -> (C, N) logits
    offsets: torch.Tensor              # (C, N)
    allowed: torch.Tensor              # (C, N)
    answers: torch.Tensor              # (C,)


def _collect(net: HybridNet, scoring: Scoring, held: HeldOut) -> _Cases:
    """Every part's logits of the held-out cases (as many as MAX_FIT_LOGITS allows)."""
    n_items, n_parts = len(scoring.ids), len(net.part_columns()) + 1
    limit = max(1, MAX_FIT_LOGITS // max(1, n_items * n_parts))
    if len(held.answer) > limit:
        held = HeldOut(held.history[:limit], held.answer[:limit], held.hours[:limit],
                       held.shown[:limit] if held.shown is not None else None)
    blocks = list(scored_blocks(net, scoring, held))
    parts = {name: torch.cat([b[0][name] for b in blocks]).float() for name in blocks[0][0]}
    return _Cases(parts, torch.cat([b[1] for b in blocks]).float(), torch.cat([b[2] for b in blocks]),
                  torch.cat([b[3] for b in blocks]))


def _subset(cases: _Cases, rows: torch.Tensor) -> _Cases:
    return _Cases({n: v[rows] for n, v in cases.parts.items()}, cases.offsets[rows], cases.allowed[rows], cases.answers[rows])


def _cross_fitted_quality(cases: _Cases, groups: torch.Tensor, n_groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per case (nDCG@10, nDCG) of the fitted blend, each half of the cases scored by weights fitted on the other
    half: a blend scored on the cases it was fitted on looks better than it will on new data, and was kept over
    a part that then ranked the test consumptions better."""
    n = len(cases.answers)
    if n < 4:
        weights, offset = _fit(cases, groups, n_groups)
        return ranking_quality(_blended(cases, weights, offset, groups), cases.allowed, cases.answers)
    folds = [torch.arange(0, n, 2), torch.arange(1, n, 2)]
    at10, full = torch.empty(n), torch.empty(n)
    for fit_rows, test_rows in (folds, folds[::-1]):
        weights, offset = _fit(_subset(cases, fit_rows), groups, n_groups)
        test = _subset(cases, test_rows)
        a, f = ranking_quality(_blended(test, weights, offset, groups), test.allowed, test.answers)
        at10[test_rows], full[test_rows] = a.float().cpu(), f.float().cpu()
    return at10, full


def _blended(cases: _Cases, weights: torch.Tensor, offset: float | torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """(C, N) logits of a blend: weights (groups, parts) per item group, offset the weight of the age offset."""
    logits = offset * cases.offsets
    for k, part in enumerate(cases.parts.values()):
        logits = logits + weights[groups, k].unsqueeze(0) * part
    return logits


def _fit(cases: _Cases, groups: torch.Tensor, n_groups: int, iterations: int = 60) -> tuple[torch.Tensor, float]:
    """Maximum-likelihood weights (groups x parts, and the offsets' one), all >= 0, starting from the model as trained;
    group 0 (items without an id: none is held out) shares group 1's weights."""
    n_parts = len(cases.parts)
    theta = torch.zeros(n_groups, n_parts + 1, requires_grad=True)
    scale = 1.0 / math.log(2.0)  # softplus(0) * scale = 1: the start is the model as trained
    optimizer = torch.optim.LBFGS([theta], lr=0.5, max_iter=iterations, line_search_fn="strong_wolfe")
    mask = ~cases.allowed

    def weights() -> tuple[torch.Tensor, torch.Tensor]:
        w = torch.nn.functional.softplus(theta) * scale
        w = torch.cat([w[1:2], w[1:]])  # group 0 takes group 1's weights
        return w[:, :n_parts], w[1, n_parts]

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        w, o = weights()
        logits = _blended(cases, w, o, groups).masked_fill(mask, float("-inf"))
        loss = torch.nn.functional.cross_entropy(logits, cases.answers) + PRIOR * (theta**2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        w, o = weights()
    if not (torch.isfinite(w).all() and math.isfinite(float(o))):
        return torch.ones(n_groups, n_parts), 1.0
    return w.detach(), float(o)
