"""Training the hybrid recommender (and its ids-only form, SASRec with full cross-entropy).

Examples are chunks of users' item sequences: a user's sequence is the explicit history of their first
training impression (sources that give one) followed by their consumed (label-1) items in time order;
it is cut from its end into windows of `sequence_length + 1` items, each window one example that
predicts every next item from the items before it (every consumption is a target once per epoch; a
user's first from an empty history).
`train.batch_size` counts windows. The catalogue the softmax runs over is every item consumed in the
training slice; each of them gets an id embedding. On logs with logged non-clicks (MIND), a click also
ranks against its own impression's non-clicks (`model.hybrid.impression_loss`): the next-item softmax
learns which item of the whole catalogue a user consumes next, much of which is which items were shown
at all; an impression asks which of the shown ones.

The item texts are encoded once by the frozen backbone; each step then costs a projection of the
catalogue's text vectors and a small transformer over the windows, which is why this model trains
thousands of steps on a CPU in minutes. Each target's time and each catalogue item's first appearance
in the log give the item's age at that moment (the model learns a freshness offset), and items the log
had not shown yet are left out of that target's softmax (no negative from the future). With `model.hybrid.calibration` > 0, a
calibration run first trains the same model, as long, without the latest share of the
consumptions (items first consumed among them playing new ones) and fits the score offset of id-less items on
them by maximum likelihood (`fit_new_item_offset`: in training, ids have seen the clicks they are asked to
predict, so a model learns to trust them more than it can on new data); the model then trains on everything
as without it and keeps that offset. With `model.hybrid.ease`, EASE's weights over the most consumed items are fitted (closed form) on the
training consumptions before the loop. With `train.eval_every`, the last consumption of the
`VALIDATION_USERS` users whose last one is the most recent is held out of training and ranked against
the whole catalogue every so many steps; the loop keeps the best step's weights. The hybrid's own parameters learn at `HYBRID_LR_SCALE` (10)
times `train.lr` (they start from scratch; `train.lr` is sized for fine-tuning a pretrained backbone).
The loop itself (optimizer, schedule, accumulation, precision, DDP, checkpoints, time limit) is
`llmrec.train_loop`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from llmrec.config import HybridParams, ModelParams, TrainParams
from llmrec.data.contract import Dataset
from llmrec.data.sequences import VALIDATION_USERS, timed_sequences
from llmrec.data.sequences import hold_out_last as sequences_hold_out_last
from llmrec.distributed import Distributed
from llmrec.errors import DataError
from llmrec.models.backbone import resolve_backbone
from llmrec.models.cross_encoder import pick_device
from llmrec.models.hybrid import SUPPORT_BUCKETS, UNKNOWN, Hybrid, HybridConfig, HybridNet
from llmrec.models.text import TextConfig, item_texts
from llmrec.train_loop import LoopResult, LoopTask, checkpoint_digest, find_checkpoint, remove_checkpoint, run_loop, seed_everything
from llmrec.training import TrainResult, train_result

log = logging.getLogger(__name__)

HYBRID_LR_SCALE = 10.0
PAD = -1


def user_sequences(train: Dataset) -> pd.Series:
    """user_id -> list of consumed item ids, oldest first (see the module docstring)."""
    return timed_sequences(train)[0]


def training_catalogue(train: Dataset, sequences: pd.Series, with_text: bool) -> tuple[list[str], list[str]]:
    """(catalogue: every item the softmax ranks, vocabulary: the items that get an id embedding): the items
    consumed in training, both. Items only ever shown stay out: an id learned from negatives alone reads as
    "unpopular" when the item is merely new, and with them in the softmax the one shared "unknown" row
    would be trained on such items as well, instead of on id dropout alone (what cold items need)."""
    catalogue = list(dict.fromkeys(i for seq in sequences for i in seq))
    if with_text:
        known = set(train.items["item_id"].astype(str))
        catalogue = [i for i in catalogue if i in known]
    return catalogue, sorted(catalogue)


def _window_spans(sequences: pd.Series, row: dict[str, int], length: int) -> Iterator[tuple[str, list[int], int]]:
    """(user, positions in the user's sequence of the window's items, left padding) of every window (see
    `sequence_windows`); items without a catalogue row are skipped."""
    for user, seq in sequences.items():
        keep = [k for k, i in enumerate(seq) if i in row]
        for end in range(len(keep), 0, -length):
            start = max(0, end - length - 1)
            yield user, keep[start:end], length + 1 - (end - start)


def sequence_windows(sequences: pd.Series, row: dict[str, int], length: int,
                     times: pd.Series | None = None) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """(n, length + 1) catalogue rows of every window, left-padded with -1: window[t] is the input whose
    next item window[t + 1] is the target. Every consumption is a target exactly once; a user's first
    one follows padding only, which trains the "no history" user (the same at every position).
    With `times` (aligned with `sequences`), also the (n, length + 1) float times of the same positions."""
    windows, stamps = [], []
    for user, positions, pad in _window_spans(sequences, row, length):
        windows.append([PAD] * pad + [row[sequences[user][k]] for k in positions])
        if times is not None:
            stamps.append([float("nan")] * pad + [times[user][k] for k in positions])
    if not windows:
        raise DataError(
            "no user consumed anything in the training data, so there is no sequence to learn from",
            fix="check the labels of the training data, or train on a longer period",
        )
    out = np.asarray(windows, dtype=np.int64)
    return (out, np.asarray(stamps, dtype=np.float64)) if times is not None else out


IMPRESSION_NEGATIVES = 20  # impression loss: logged non-clicks kept per click (a random subset of larger impressions)


def impression_negatives(train: Dataset, row: dict[str, int], seed: int, cap: int | None = IMPRESSION_NEGATIVES,
                         ) -> dict[tuple[str, str, float], list[int]]:
    """(user, item, time in hours) of each click -> catalogue rows of the non-clicks logged in its impression (at
    most `cap`, None = all; items outside the catalogue left out); empty for logs without logged non-clicks."""
    from llmrec.data.context import hours

    if not train.source.logged_negatives:
        return {}
    inter = train.interactions
    shown = inter.loc[(inter["label"] == 0) & inter["item_id"].isin(row.keys()), ["impression_id", "item_id"]]
    by_impression = shown.groupby("impression_id", sort=False)["item_id"].agg(list).to_dict()
    clicks = inter.loc[inter["label"] == 1, ["impression_id", "user_id", "item_id", "timestamp"]]
    rng = np.random.default_rng(seed)
    out = {}
    for imp, user, item, when in zip(clicks["impression_id"], clicks["user_id"], clicks["item_id"], hours(clicks["timestamp"])):
        negatives = by_impression.get(imp)
        if negatives:
            if cap is not None and len(negatives) > cap:
                negatives = list(rng.choice(negatives, cap, replace=False))
            out[(user, item, float(when))] = [row[i] for i in negatives]
    return out


def window_impressions(sequences: pd.Series, times: pd.Series, row: dict[str, int], length: int,
                       negatives: dict[tuple[str, str, float], list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """(groups (n, length + 1): for each position of `sequence_windows`' windows, the row of `table` holding the
    logged non-clicks of the impression its item was clicked in, -1 for none; table (G, cap): catalogue rows,
    -1 padded)."""
    groups, table = [], []
    for user, positions, pad in _window_spans(sequences, row, length):
        line = [-1] * pad
        for k in positions:
            found = negatives.get((user, sequences[user][k], float(times[user][k])))
            line.append(len(table) if found else -1)
            if found:
                table.append(found)
        groups.append(line)
    width = max((len(t) for t in table), default=1)
    padded = np.full((max(len(table), 1), width), PAD, dtype=np.int64)
    for g, rows in enumerate(table):
        padded[g, : len(rows)] = rows
    return np.asarray(groups, dtype=np.int64), padded


def impression_cross_entropy(logits: torch.Tensor, answer: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy of each click against its impression's logged non-clicks only: logits (T, N) over the
    catalogue, answer (T,) and negatives (T, K) catalogue columns (-1 = none)."""
    allowed = torch.zeros(logits.shape[0], logits.shape[1] + 1, dtype=torch.bool, device=logits.device)
    allowed.scatter_(1, torch.where(negatives >= 0, negatives, logits.shape[1]), True)
    allowed = allowed[:, :-1]
    allowed[torch.arange(len(answer), device=logits.device), answer] = True
    return torch.nn.functional.cross_entropy(logits.float().masked_fill(~allowed, float("-inf")), answer)


def hold_out_last(sequences: pd.Series, times: pd.Series, row: dict[str, int], users: int | None = VALIDATION_USERS,
                  ) -> tuple[pd.Series, pd.Series, list[tuple[list[int], int, float]], list[str]]:
    """`llmrec.data.sequences.hold_out_last` over the catalogue `row`: (sequences and times without the held-out
    consumptions, held out: [(catalogue rows of the whole history before it, oldest first; its row; its time in
    hours)], the user of each)."""
    seqs, stamps, held = sequences_hold_out_last(sequences, times, row, users)
    return seqs, stamps, [([row[i] for i in h.history], row[h.item], h.hours) for h in held], [h.user for h in held]


def held_out_logits(net: HybridNet, text: torch.Tensor | None, ids: torch.Tensor, held: list[tuple[list[int], int, float]],
                    hours_base: float, first_seen: torch.Tensor, consumed_only: bool, device: torch.device,
                    block: int = 256) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Per block of held-out consumptions (`hold_out_last`): (logits over the training catalogue, the user's
    history items at -inf; the answer's column), scored as at inference (every id kept)."""
    length = net.config.sequence_length
    for start in range(0, len(held), block):
        part = held[start : start + block]
        inputs = torch.full((len(part), length), PAD, dtype=torch.long)
        targets = torch.full((len(part), length), PAD, dtype=torch.long)
        hours = torch.full((len(part), length), float("nan"))
        for k, (history, answer, when) in enumerate(part):
            recent = history[-length:]
            inputs[k, length - len(recent):] = torch.as_tensor(recent)
            targets[k, -1] = answer
            hours[k, -1] = when - hours_base
        logits, answer, _, _ = net(text, ids, inputs.to(device), targets.to(device), None, hours.to(device), first_seen,
                                   consumed_only, False)
        seen = torch.zeros_like(logits, dtype=torch.bool)
        for k, (history, _, _) in enumerate(part):
            seen[k, torch.as_tensor(history, dtype=torch.long)] = True
        seen[torch.arange(len(part), device=logits.device), answer] = False
        yield logits.float().masked_fill(seen, float("-inf")), answer


def validation_ndcg_full(net: HybridNet, text: torch.Tensor | None, ids: torch.Tensor, held: list[tuple[list[int], int, float]],
                         hours_base: float, first_seen: torch.Tensor, consumed_only: bool, device: torch.device) -> float:
    """Mean nDCG of the held-out consumptions over the whole ranking (no cut-off, so smooth enough to select
    a step on a few hundred users) of the training catalogue minus each user's history, scored as at
    inference (eval mode, every id kept)."""
    gains = []
    for logits, answer in held_out_logits(net, text, ids, held, hours_base, first_seen, consumed_only, device):
        right = logits[torch.arange(len(answer), device=logits.device), answer]
        rank = (logits > right.unsqueeze(1)).sum(1) + 1
        gains.append(1.0 / torch.log2(rank.double() + 1.0))
    return float(torch.cat(gains).mean()) if gains else float("nan")


def newton_offset(logit: torch.Tensor, direction: torch.Tensor, answer: torch.Tensor, low: float = -20.0, high: float = 20.0,
                  iterations: int = 25) -> float:
    """The c in [low, high] that maximises the mean log-softmax likelihood of `answer` under logit + c * direction
    (rows: cases, columns: candidates; a concave problem in one number, Newton's method from 0)."""
    at = torch.arange(len(answer), device=answer.device)
    target = direction[at, answer]
    c = torch.zeros((), device=logit.device)
    for _ in range(iterations):
        p = torch.softmax(logit + c * direction, dim=1)
        mean = (p * direction).sum(1)
        grad = (mean - target).mean()
        hess = ((p * direction * direction).sum(1) - mean**2).mean().clamp(min=1e-6)
        step = (grad / hess).clamp(-2.0, 2.0)
        c = (c - step).clamp(low, high)
        if step.abs() < 1e-4:
            break
    return float(c)


EASE_WEIGHT_FACTORS = (0.5, 0.71, 1.0, 1.41, 2.0, 2.83, 4.0)  # the EASE weights tried after training, times the learned one


def fit_ease_weight(net: HybridNet, text: torch.Tensor | None, ids: torch.Tensor, held: list[tuple[list[int], int, float]],
                    hours_base: float, first_seen: torch.Tensor, consumed_only: bool, device: torch.device) -> float:
    """The weight of the EASE part, among EASE_WEIGHT_FACTORS times the learned one, that ranks the held-out
    consumptions best (`validation_ndcg_full`; the learned one unless another is better): EASE was fitted on
    the very consumptions trained on, but never saw the held-out ones, as it will not see new data. Set in
    `net` and returned."""
    learned = float(net.ease_scale.detach())
    scores = {}
    with torch.no_grad():
        for factor in EASE_WEIGHT_FACTORS:
            net.ease_scale.fill_(learned * factor)
            scores[factor] = validation_ndcg_full(net, text, ids, held, hours_base, first_seen, consumed_only, device)
        best = max(EASE_WEIGHT_FACTORS, key=lambda f: (scores[f], f == 1.0))
        net.ease_scale.fill_(learned * best)
    return learned * best


ZERO_SHOT_WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)  # the zero-shot part's weights tried after training


def held_out_impression_ndcg(net: HybridNet, text: torch.Tensor | None, ids: torch.Tensor, held: list[tuple[list[int], int, float]],
                             shown: list[list[int] | None], hours_base: float, first_seen: torch.Tensor, consumed_only: bool,
                             device: torch.device) -> float:
    """Mean nDCG (whole ranking, no cut-off) of each held-out click among its own impression's logged non-clicks
    (`shown`, catalogue rows, per held-out consumption; None = no impression logged), scored as at inference."""
    gains, start = [], 0
    for logits, answer in held_out_logits(net, text, ids, held, hours_base, first_seen, consumed_only, device):
        for k in range(len(answer)):
            rows = shown[start + k]
            if rows:
                candidates = logits[k, torch.as_tensor(rows, dtype=torch.long, device=logits.device)]
                rank = int((candidates > logits[k, answer[k]]).sum()) + 1
                gains.append(1.0 / math.log2(rank + 1.0))
        start += len(answer)
    return float(np.mean(gains)) if gains else float("nan")


def fit_zero_shot_weight(net: HybridNet, held_score: Callable[[], float]) -> tuple[float, dict[float, float]]:
    """The weight of the zero-shot part, among ZERO_SHOT_WEIGHTS, that ranks the held-out consumptions best
    (`held_score`: higher is better, computed with the net's current weights; the configured weight unless another is
    better, then the smaller of equals). Set in `net`; returns it and the score of every weight tried."""
    scores, configured = {}, float(net.zero_shot_scale)
    with torch.no_grad():
        for weight in ZERO_SHOT_WEIGHTS:
            net.zero_shot_scale.fill_(weight)
            scores[weight] = held_score()
        best = max(ZERO_SHOT_WEIGHTS, key=lambda w: (scores[w], w == configured, -w))
        net.zero_shot_scale.fill_(best)
    return best, scores


# the calibration run's share of train.max_steps (with a time limit, it gets half of it): the offset grows with training (ids memorise
# their clicks), so it is fitted on a run as long as the model's (measured on the bundled data: 0.38 after 180 steps,
# 2.2 after 420-600)
CALIBRATION_STEPS = 1.0
MAX_CALIBRATION_LOGITS = 20_000_000  # held-out targets x candidates kept in memory to fit it


def calibration_cut(windows: np.ndarray, hours: np.ndarray, share: float) -> float | None:
    """The time from which the latest `share` of the training consumptions (targets) are held out to fit the
    new-item offset; None when off or when the log has too few timed consumptions."""
    times = hours[:, 1:][windows[:, 1:] >= 0]
    times = times[np.isfinite(times)]
    if share <= 0 or len(times) < 100:
        return None
    cut = float(np.quantile(times, 1.0 - share))
    return cut if (times >= cut).sum() < len(times) else None


def fit_new_item_offset(net: HybridNet, text: torch.Tensor | None, ids: torch.Tensor, windows: np.ndarray, late: np.ndarray,
                        hours: torch.Tensor, first_seen: torch.Tensor, log_q: torch.Tensor | None, consumed_only: bool,
                        device: torch.device, iterations: int = 25) -> float:
    """The score offset c of items without an id that maximises the likelihood of the held-out `late` targets
    (softmax over the candidates, scored as at inference, `ids` giving the items the model knows): a convex
    problem in one number, solved by Newton's method."""
    rows = np.flatnonzero(late.any(axis=1))
    targets = np.where(late, windows[:, 1:], PAD)
    logits, marks, answers, kept = [], [], [], 0
    net.eval()
    with torch.no_grad():
        for start in range(0, len(rows), 64):
            idx = rows[start : start + 64]
            inputs = torch.from_numpy(windows[idx, :-1]).to(device)
            target = torch.from_numpy(targets[idx]).to(device)
            args = (text, ids, inputs, target, log_q, hours[idx][:, 1:].to(device), first_seen, consumed_only, False)
            net.no_id_offset.zero_()
            base, answer, _, _ = net(*args)
            net.no_id_offset.fill_(1.0)
            shifted, _, _, _ = net(*args)
            logits.append(base.float())
            marks.append((shifted - base).nan_to_num(0.0).float())  # 1 where the candidate has no id
            answers.append(answer)
            kept += base.numel()
            if kept > MAX_CALIBRATION_LOGITS:
                break
        net.no_id_offset.zero_()
        return newton_offset(torch.cat(logits), torch.cat(marks), torch.cat(answers), iterations=iterations)


def ease_weights(sequences: pd.Series, row: dict[str, int], n_items: int, l2: float, max_items: int) -> tuple[np.ndarray, np.ndarray]:
    """(catalogue rows of the `max_items` most consumed items, sorted; EASE's weights among them) from the
    consumptions of `sequences` (the same closed form as the EASE baseline)."""
    from scipy.sparse import csr_matrix

    from llmrec.evaluation.baselines import ease_matrix, most_consumed

    pairs = {(u, row[i]) for u, seq in enumerate(sequences) for i in seq if i in row}
    users, items = (np.fromiter((p[k] for p in pairs), dtype=np.int64, count=len(pairs)) for k in (0, 1))
    matrix = csr_matrix((np.ones(len(pairs)), (users, items)), shape=(len(sequences), n_items))
    top = most_consumed(matrix, max_items)
    return top, ease_matrix(matrix[:, top], l2)


OFFSET_LR_SCALE = 30.0  # score offsets (item bias, age): one number each, with Adam they move ~lr per step


def _param_groups(net: HybridNet, lr: float) -> list[dict]:
    """AdamW groups: the score offsets (per-item bias, per-age-bucket offset) and the text weight learn OFFSET_LR_SCALE times faster,
    so that they can reach their scale (several logits) within a few thousand steps; everything else at `lr`."""
    offsets = [net.bias.weight, net.age.weight] + ([net.text_scale] if net.config.text else []) + ([net.ease_scale] if net.ease_items else [])
    rest = [p for p in net.parameters() if p.requires_grad and all(p is not o for o in offsets)]
    return [{"params": rest, "lr": lr}, {"params": offsets, "lr": lr * OFFSET_LR_SCALE, "weight_decay": 0.0}]


def fit_hybrid(
    train: Dataset,
    hybrid: HybridParams,
    train_params: TrainParams,
    out: str | Path,
    *,
    backbone: str = "default",
    max_length: int = 64,
    on_step: Callable[[int, float], None] | None = None,
    progress: bool = True,
    desc: str = "training hybrid",
    lr_scale: float = HYBRID_LR_SCALE,
    validation_users: int | None = VALIDATION_USERS,
) -> tuple[Hybrid, TrainResult]:
    """Train a hybrid (or, with hybrid.text false, SASRec) model; nothing is saved (see `train_hybrid`). With validation,
    the last consumption of `validation_users` users (None = all) is held out (`llmrec.data.sequences.hold_out_last`)."""
    from llmrec.models.text_encoder import FrozenTextEncoder

    seed_everything(train_params.seed)
    dist = Distributed.from_env(pick_device(train_params.device))
    device = dist.device_for(pick_device(train_params.device))
    config = HybridConfig.from_params(hybrid)
    text_config = TextConfig()
    from llmrec.data.context import first_seen_hours

    sequences, times = timed_sequences(train)
    catalogue, vocab = training_catalogue(train, sequences, config.text)
    row = {item: k for k, item in enumerate(catalogue)}
    held: list[tuple[list[int], int, float]] = []
    held_users: list[str] = []
    if train_params.validates:
        sequences, times, held, held_users = hold_out_last(sequences, times, row, validation_users)
        if not held:
            raise DataError("no user has two consumptions in the training data, so none can be held out to validate on",
                            fix="set train.eval_every: 0")
    windows, window_hours = sequence_windows(sequences, row, config.sequence_length, times)
    full = len(catalogue) <= hybrid.full_softmax_max_items
    groups = table = None
    if hybrid.impression_loss and config.ids and full:  # in-batch softmax: the non-clicks are not among the candidates
        negatives = impression_negatives(train, row, train_params.seed)
        if negatives:
            groups, table = window_impressions(sequences, times, row, config.sequence_length, negatives)
            table = torch.from_numpy(table).to(device)
            if dist.is_main:
                log.info("%s: impression loss (weight %g) on %d clicks, each against its impression's logged non-clicks",
                         desc, hybrid.impression_loss, int((groups >= 0).sum()))
    elif hybrid.impression_loss and config.ids and train.source.logged_negatives and dist.is_main:
        log.info("%s: no impression loss: the catalogue (%d items) is above model.hybrid.full_softmax_max_items, so the "
                 "softmax runs over in-batch negatives that do not include the impressions' non-clicks", desc, len(catalogue))
    cut = calibration_cut(windows, window_hours, hybrid.calibration) if config.ids else None
    hours_base = float(np.nanmin(window_hours)) if np.isfinite(window_hours).any() else 0.0  # float32-friendly offsets
    late = (window_hours[:, 1:] >= cut) & (windows[:, 1:] >= 0) if cut is not None else None
    window_hours = torch.from_numpy((window_hours - hours_base).astype(np.float32))
    first_seen = torch.tensor(first_seen_hours(train).reindex(catalogue).to_numpy(dtype=np.float64) - hours_base,
                              dtype=torch.float32, device=device)
    encoder = FrozenTextEncoder(resolve_backbone(backbone), max_length, device) if config.text else None
    text = None
    if encoder is not None:
        texts = item_texts(train.items, text_config)
        text = encoder.encode([texts[i] for i in catalogue], progress=progress and dist.is_main).to(device)
    ease = ease_weights(sequences, row, len(catalogue), hybrid.ease_l2, hybrid.ease_max_items) if config.ids and config.ease else None
    model = Hybrid(HybridNet(config, encoder.dim if encoder else 0, len(vocab), seed=train_params.seed,
                             ease_items=len(ease[0]) if ease is not None else 0), vocab, encoder, text_config, backbone, max_length, device)
    ids = model.item_rows(catalogue)
    if model.net.zero_shot_dim:
        model.net.zero_shot_scale.fill_(hybrid.zero_shot_weight)
    if ease is not None:
        with torch.no_grad():
            top, weights = ease
            model.net.ease_index[ids[torch.from_numpy(top).to(device)]] = torch.arange(1, len(top) + 1, device=device)
            model.net.item_item[1:, 1:] = torch.from_numpy(weights).float().to(device)
        if dist.is_main:
            log.info("%s: EASE weights of the %d most consumed items (l2 %g)", desc, len(top), hybrid.ease_l2)
    targets = windows[:, 1:][windows[:, 1:] >= 0]
    if config.text:
        counts = torch.from_numpy(np.bincount(targets, minlength=len(catalogue))).to(device)
        with torch.no_grad():
            buckets = 1 + torch.log2(counts.clamp(min=1).float()).floor().long()
            model.net.support[ids] = buckets.clamp(max=SUPPORT_BUCKETS - 1)
    log_q = torch.log(torch.from_numpy(np.bincount(targets, minlength=len(catalogue)) + 1.0) / (len(targets) + len(catalogue))).float().to(device)
    if dist.is_main:
        log.info("%s: %d sequences -> %d windows of %d, %d targets; catalogue %d items (%d with ids), %s softmax",
                 desc, len(sequences), len(windows), config.sequence_length, len(targets), len(catalogue), len(vocab),
                 "full" if full else "in-batch (log-Q corrected)")
    generator = np.random.default_rng(train_params.seed + 1 + dist.rank)
    consumed_only = not train.source.logged_negatives  # positive-only logs: items appear by being consumed

    def loss(module: torch.nn.Module, idx: np.ndarray, windows: np.ndarray = windows, ids: torch.Tensor = ids,
             window_hours: torch.Tensor = window_hours, groups: np.ndarray | None = groups) -> torch.Tensor:
        chunk = torch.from_numpy(windows[idx]).to(device)
        inputs, target = chunk[:, :-1], chunk[:, 1:]
        step_ids = ids
        if config.ids and config.id_dropout and module.training:
            keep = torch.from_numpy(generator.random(len(catalogue)) >= config.id_dropout).to(device)
            step_ids = torch.where(keep, ids, torch.full_like(ids, UNKNOWN))
        logits, answer, text_logits, id_logits = module(text, step_ids, inputs, target, None if full else log_q,
                                                        window_hours[idx][:, 1:].to(device), first_seen, consumed_only)
        loss = torch.nn.functional.cross_entropy(logits.float(), answer)
        if groups is not None:  # each click against its own impression's non-clicks: the ranking impressions ask for
            group = torch.from_numpy(groups[idx][:, 1:][windows[idx][:, 1:] >= 0]).to(device)
            logged = group >= 0
            if logged.any():
                loss = loss + hybrid.impression_loss * impression_cross_entropy(logits[logged], answer[logged], table[group[logged]])
        if text_logits is not None:
            loss = loss + config.text_loss * torch.nn.functional.cross_entropy(text_logits.float(), answer)
        if id_logits is not None:  # targets whose id is dropped this step have no id-only answer
            has_id = torch.isfinite(id_logits.gather(1, answer.unsqueeze(1))).squeeze(1)
            if has_id.any():
                loss = loss + config.id_loss * torch.nn.functional.cross_entropy(id_logits[has_id].float(), answer[has_id])
        return loss

    validate = None
    if held:
        if dist.is_main:
            every = f"{train_params.eval_every_epochs:g} epoch(s)" if train_params.eval_every_epochs else f"{train_params.eval_every} steps"
            log.info("%s: validating every %s on the last consumption of %d users (held out of training)", desc, every, len(held))
        validate = lambda: validation_ndcg_full(model.net, text, ids, held, hours_base, first_seen, consumed_only, device)  # noqa: E731
    task = LoopTask(
        module=model.net,
        param_groups=_param_groups(model.net, train_params.lr * lr_scale),
        validate=validate,
        metric="ndcg_full",  # nDCG over the whole ranking, no cut-off
        n_examples=len(windows),
        loss=loss,
        digest=checkpoint_digest(ModelParams(hybrid=hybrid, backbone=backbone, max_length=max_length), train_params,
                                 pd.DataFrame(windows), model="hybrid", catalogue=len(catalogue)),
        pairs_per_example=config.sequence_length,
        lengths=(windows >= 0).sum(1),  # batches of similar lengths: the encoder skips columns that are padding in every row
        desc=desc,
    )
    first: LoopResult | None = None
    resuming = train_params.checkpoint_every and find_checkpoint(out, task.digest, train_params.resume) is not None
    if late is not None and late.any() and not resuming:  # a checkpoint holds the offset already
        # a run of the same model without the latest consumptions (items first consumed among them playing
        # new ones) fits the new-item offset on them, as the model will meet new items; the model itself then
        # trains on everything, untouched by it
        net = HybridNet(config, model.net.text_dim, len(vocab), seed=train_params.seed, ease_items=model.net.ease_items).to(device)
        if config.text:
            net.support.copy_(model.net.support)
        if net.zero_shot_dim:
            net.zero_shot_scale.copy_(model.net.zero_shot_scale)
        if net.ease_items:
            net.ease_index.copy_(model.net.ease_index)
            net.item_item.copy_(model.net.item_item)
        first = _calibration_run(net, task, train_params, windows, late, ids, text, window_hours, first_seen,
                                 None if full else log_q, consumed_only, loss, out, device, dist, progress, lr_scale, groups)
        model.net.no_id_offset.copy_(net.no_id_offset)
        if train_params.max_minutes:
            train_params = train_params.model_copy(update={"max_minutes": max(0.1, train_params.max_minutes - first.seconds / 60)})
    elif not resuming:
        model.net.no_id_offset.fill_(hybrid.new_item_offset)
    result = run_loop(task, train_params, out, device, dist, on_step=on_step, progress=progress)
    if held and model.net.ease_items:
        model.net.eval()
        learned = float(model.net.ease_scale.detach())
        fitted = fit_ease_weight(model.net, text, ids, held, hours_base, first_seen, consumed_only, device)
        if dist.is_main:
            log.info("%s: EASE weight %.3f (learned in training: %.3f), chosen on the %d held-out consumptions", desc, fitted,
                     learned, len(held))
    if held and model.net.zero_shot_dim:
        model.net.eval()
        found = impression_negatives(train, row, train_params.seed, cap=None)
        shown = [found.get((user, catalogue[answer], when)) for user, (_, answer, when) in zip(held_users, held)]
        on_impressions = sum(bool(s) for s in shown) >= min(100, len(held))
        if on_impressions:  # logs with impressions: rank each click among what was shown with it, as they ask
            held_score = lambda: held_out_impression_ndcg(model.net, text, ids, held, shown, hours_base, first_seen,  # noqa: E731
                                                          consumed_only, device)
        else:
            held_score = lambda: validation_ndcg_full(model.net, text, ids, held, hours_base, first_seen, consumed_only, device)  # noqa: E731
        weight, scores = fit_zero_shot_weight(model.net, held_score)
        if dist.is_main:
            log.info("%s: zero-shot weight %g, chosen on %d held-out %s (nDCG %s)", desc, weight,
                     sum(bool(s) for s in shown) if on_impressions else len(held),
                     "clicks among their impressions" if on_impressions else "consumptions over the catalogue",
                     ", ".join(f"{w:g}: {v:.4f}" for w, v in scores.items()))
    if first is not None:
        result = replace(result, seconds=first.seconds + result.seconds)
    if config.text and dist.is_main:
        log.info("%s: %s", desc, text_weights(model.net))
    model.net.eval()
    _unknown_bias(model.net, torch.arange(1, len(vocab) + 1))
    return model, train_result(out, result, len(windows), device)


def _calibration_run(net: HybridNet, task: LoopTask, params: TrainParams, windows: np.ndarray, late: np.ndarray,
                     ids: torch.Tensor, text: torch.Tensor | None, hours: torch.Tensor, first_seen: torch.Tensor,
                     log_q: torch.Tensor | None, consumed_only: bool, loss: Callable, out: str | Path, device: torch.device,
                     dist: Distributed, progress: bool, lr_scale: float, groups: np.ndarray | None = None) -> LoopResult:
    """Train `net` without the `late` targets (CALIBRATION_STEPS of the steps), fit the new-item offset on them
    and set it in `net` (see the module docstring)."""
    early_windows = windows.copy()
    early_windows[:, 1:][late] = PAD
    keep = (early_windows[:, 1:] >= 0).any(axis=1)
    early_windows, early_hours = early_windows[keep], hours[torch.from_numpy(keep)]
    early_groups = groups[keep] if groups is not None else None
    known = np.unique(early_windows[early_windows >= 0])
    early_ids = torch.where(torch.isin(torch.arange(len(ids), device=device), torch.from_numpy(known).to(device)),
                            ids, torch.full_like(ids, UNKNOWN))
    run = replace(task, module=net, n_examples=len(early_windows), lengths=(early_windows >= 0).sum(1), param_groups=_param_groups(net, params.lr * lr_scale),
                  loss=lambda module, idx: loss(module, idx, early_windows, early_ids, early_hours, early_groups),
                  digest=task.digest + "-calibration", validate=None, desc=f"{task.desc}: calibration run, without the latest")
    steps = max(1, round(params.max_steps * CALIBRATION_STEPS))
    result = run_loop(run, params.model_copy(update={"max_steps": steps, "checkpoint_every": 0,
                                                     "max_minutes": params.max_minutes / 2}),  # half a time budget each
                      out, device, dist, progress=progress)
    _unknown_bias(net, ids[torch.from_numpy(known).to(device)])
    offset = fit_new_item_offset(net, text, early_ids, windows, late, hours, first_seen, log_q, consumed_only, device)
    net.no_id_offset.fill_(offset)
    if dist.is_main:
        log.info("%s: new-item score offset %+.3f, fitted on %d held-out recent consumptions (%d items new to the calibration run)",
                 task.desc, offset, int(late.sum()), len(ids) - len(known))
    return result

def text_weights(net: HybridNet) -> str:
    """The learned weight of the text part for items without an id and, as a median over support buckets, with one."""
    def describe(weights: torch.Tensor) -> str:
        used = torch.unique(net.support[1:]) if len(net.support) > 1 else torch.zeros(0, dtype=torch.long)
        known = weights[used[used > 0]]
        return f"{float(weights[0]):.2f} without an id, {float(known.median()):.2f} with one" if len(known) else f"{float(weights[0]):.2f}"
    return f"text weight {describe(net.text_scale.detach())}"


def _unknown_bias(net: HybridNet, known_rows: torch.Tensor) -> None:
    """With `unknown_offset: mean`, a new item's bias is that of an average known item (the id rows given)."""
    if net.config.bias and net.config.unknown_offset == "mean" and len(known_rows):
        with torch.no_grad():
            net.bias.weight[UNKNOWN] = net.bias.weight[known_rows.to(net.bias.weight.device)].mean()


def train_hybrid(
    train: Dataset,
    model_params: ModelParams,
    train_params: TrainParams,
    out: str | Path,
    on_step: Callable[[int, float], None] | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train the hybrid recommender on `train` and save it to `out` (the main process saves)."""
    model, result = fit_hybrid(
        train, model_params.hybrid, train_params, out, backbone=model_params.backbone, max_length=model_params.max_length,
        on_step=on_step, progress=progress,
    )
    dist = Distributed.from_env(model.device)
    if dist.is_main:
        model.save(out)
        remove_checkpoint(out)
    dist.barrier()
    return result
