"""Training the hybrid recommender (and its ids-only form, SASRec with full cross-entropy).

Examples are chunks of users' item sequences: a user's sequence is the explicit history of their first
training impression (sources that give one) followed by their consumed (label-1) items in time order;
it is cut from its end into windows of `sequence_length + 1` items, each window one example that
predicts every next item from the items before it (every consumption is a target once per epoch; a
user's first from an empty history).
`train.batch_size` counts windows. The catalogue the softmax runs over is every item consumed in the
training slice; each of them gets an id embedding. On logs with logged non-clicks (MIND), a click also
ranks against its own impression's non-clicks (`model.hybrid.experimental.impression_loss`): the next-item softmax
learns which item of the whole catalogue a user consumes next, much of which is which items were shown
at all; an impression asks which of the shown ones.

The item texts are encoded once by the frozen backbone; each step then costs a projection of the
catalogue's text vectors and a small transformer over the windows, which is why this model trains
thousands of steps on a CPU in minutes. Each target's time and each catalogue item's first appearance
in the log give the item's age at that moment (the model learns a freshness offset), and items the log
had not shown yet are left out of that target's softmax (no negative from the future). With
`model.hybrid.experimental.ease`, EASE's weights over the most consumed items are fitted (closed form) on the training
consumptions before the loop. With validation (`train.eval_every` or `train.eval_every_epochs`), the last
consumption of the most recent users (`llmrec.data.sequences.validation_size` of them) is held out of training (EASE
included): the loop keeps the best step's weights, and `llmrec.training.blend` then chooses how the parts
combine on it. The hybrid's own parameters learn at `HYBRID_LR_SCALE` (10) times `train.lr` (they start
from scratch; `train.lr` is sized for fine-tuning a pretrained backbone).
The loop itself (optimizer, schedule, accumulation, precision, DDP, checkpoints, time limit) is
`llmrec.training.loop`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from llmrec.config import HybridParams, ModelParams, TrainParams
from llmrec.data.contract import Dataset
from llmrec.data.sequences import AUTO as AUTO_VALIDATION
from llmrec.data.sequences import hold_out_last as sequences_hold_out_last
from llmrec.data.sequences import timed_sequences
from llmrec.errors import DataError
from llmrec.models.backbone import resolve_backbone
from llmrec.models.collaborative import ease_matrix, most_consumed, sequence_matrix
from llmrec.models.hybrid import SUPPORT_BUCKETS, UNKNOWN, Hybrid, HybridConfig, HybridNet
from llmrec.models.text import TextConfig, item_texts
from llmrec.models.tuning import Choice, ValidationSlice, choose_ease_l2
from llmrec.training.blend import HeldOut, Scoring, choose_blend, validation_ndcg_full
from llmrec.training.checkpoint import checkpoint_digest
from llmrec.training.common import TrainResult, save_trained, start_training, train_result
from llmrec.training.distributed import Distributed
from llmrec.training.loop import LoopTask, run_loop

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


def hold_out_last(sequences: pd.Series, times: pd.Series, row: dict[str, int], users: int | str | None = AUTO_VALIDATION,
                  ) -> tuple[pd.Series, pd.Series, list[tuple[list[int], int, float]], list[str]]:
    """`llmrec.data.sequences.hold_out_last` over the catalogue `row`: (sequences and times without the held-out
    consumptions, held out: [(catalogue rows of the whole history before it, oldest first; its row; its time in
    hours)], the user of each)."""
    seqs, stamps, held = sequences_hold_out_last(sequences, times, row, users)
    return seqs, stamps, [([row[i] for i in h.history], row[h.item], h.hours) for h in held], [h.user for h in held]


def ease_weights(ex: "_Examples", hybrid: HybridParams) -> tuple[np.ndarray, np.ndarray, str]:
    """(catalogue rows of the `ease_max_items` most consumed items, sorted; EASE's weights among them; how l2 was set)
    from the training consumptions (the held-out ones left out), with the l2 the EASE baseline would choose on the same
    validation slice (`llmrec.models.tuning`), or `ease_l2` without validation."""
    index = pd.Index(ex.catalogue)
    fit = sequence_matrix(ex.sequences, index)
    choice = Choice(hybrid.experimental.ease_l2)
    if ex.held is not None:
        position = {u: k for k, u in enumerate(ex.sequences.index)}
        part = ValidationSlice(fit, index, np.asarray([position[u] for u in ex.held_users], dtype=np.int64), ex.held.answer)
        choice = choose_ease_l2(part, hybrid.experimental.ease_l2, hybrid.ease_max_items)
    top = most_consumed(fit, hybrid.ease_max_items)
    return top, ease_matrix(fit[:, top], choice.value), choice.describe("l2")


OFFSET_LR_SCALE = 30.0  # score offsets (age, weights): one number each, with Adam they move ~lr per step


def _param_groups(net: HybridNet, lr: float) -> list[dict]:
    """AdamW groups: the age offsets, the text weights and the EASE weight learn OFFSET_LR_SCALE times faster, so that
    they can reach their scale (several logits) within a few thousand steps; everything else at `lr`."""
    offsets = [net.age.weight] + ([net.text_scale] if net.config.text else []) + ([net.ease_scale] if net.ease_items else [])
    rest = [p for p in net.parameters() if p.requires_grad and all(p is not o for o in offsets)]
    return [{"params": rest, "lr": lr}, {"params": offsets, "lr": lr * OFFSET_LR_SCALE, "weight_decay": 0.0}]


@dataclass
class _Examples:
    """What training reads, built once from the training slice."""

    catalogue: list[str]                 # the items the softmax ranks (row k = catalogue[k])
    vocab: list[str]                     # the items with an id
    row: dict[str, int]
    sequences: pd.Series                 # user -> item ids (the held-out consumptions removed)
    times: pd.Series
    windows: np.ndarray                  # (n, sequence_length + 1) catalogue rows, -1 = padding
    window_hours: torch.Tensor           # the same positions' times, hours since hours_base
    hours_base: float
    first_seen: torch.Tensor             # per catalogue row, hours since hours_base
    held: HeldOut | None                 # the validation slice
    held_users: list[str]
    impressions: tuple[np.ndarray, torch.Tensor] | None  # impression loss: (groups, table), see window_impressions


def _examples(train: Dataset, config: HybridConfig, hybrid: HybridParams, train_params: TrainParams,
              validation_users: int | None, device: torch.device) -> _Examples:
    """Sequences, catalogue, the validation slice (with validation), windows and impression groups."""
    from llmrec.data.context import first_seen_hours

    sequences, times = timed_sequences(train)
    catalogue, vocab = training_catalogue(train, sequences, config.text)
    row = {item: k for k, item in enumerate(catalogue)}
    held, held_users = [], []
    if train_params.validates:
        sequences, times, held, held_users = hold_out_last(sequences, times, row, validation_users)
        if not held:
            raise DataError("no user has two consumptions in the training data, so none can be held out to validate on",
                            fix="set train.eval_every: 0 and train.eval_every_epochs: 0")
    windows, window_hours = sequence_windows(sequences, row, config.sequence_length, times)
    hours_base = float(np.nanmin(window_hours)) if np.isfinite(window_hours).any() else 0.0  # float32-friendly offsets
    first_seen = torch.tensor(first_seen_hours(train).reindex(catalogue).to_numpy(dtype=np.float64) - hours_base,
                              dtype=torch.float32, device=device)
    impressions = None
    if hybrid.experimental.impression_loss and config.ids and len(catalogue) <= hybrid.full_softmax_max_items:
        negatives = impression_negatives(train, row, train_params.seed)  # in-batch softmax: non-clicks are no candidates
        if negatives:
            groups, table = window_impressions(sequences, times, row, config.sequence_length, negatives)
            impressions = (groups, torch.from_numpy(table).to(device))
    validation = None
    if held:
        validation = HeldOut([h for h, _, _ in held], np.asarray([a for _, a, _ in held]),
                             np.asarray([w - hours_base for _, _, w in held], dtype=np.float64))
    return _Examples(catalogue, vocab, row, sequences, times, windows, torch.from_numpy((window_hours - hours_base).astype(np.float32)),
                     hours_base, first_seen, validation, held_users, impressions)


def _build(train: Dataset, ex: _Examples, config: HybridConfig, hybrid: HybridParams, backbone: str, max_length: int,
           seed: int, device: torch.device, progress: bool) -> tuple[Hybrid, torch.Tensor | None]:
    """The untrained model (text vectors of the catalogue, EASE weights, support buckets) and the catalogue's text vectors."""
    from llmrec.models.text_encoder import FrozenTextEncoder

    text_config = TextConfig()
    encoder = FrozenTextEncoder(resolve_backbone(backbone), max_length, device) if config.text else None
    text = None
    if encoder is not None:
        texts = item_texts(train.items, text_config)
        text = encoder.encode([texts[i] for i in ex.catalogue], progress=progress).to(device)
    ease = ease_weights(ex, hybrid) if config.ids and config.ease else None
    net = HybridNet(config, encoder.dim if encoder else 0, len(ex.vocab), seed=seed, ease_items=len(ease[0]) if ease is not None else 0)
    model = Hybrid(net, ex.vocab, encoder, text_config, backbone, max_length, device)
    ids = model.item_rows(ex.catalogue)
    with torch.no_grad():
        if text is not None:
            model.net.init_text_in(text)
        if ease is not None:
            top, weights, how = ease
            log.info("EASE part: %s", how)
            model.net.ease_index[ids[torch.from_numpy(top).to(device)]] = torch.arange(1, len(top) + 1, device=device)
            model.net.item_item[1:, 1:] = torch.from_numpy(weights).float().to(device)
        targets = ex.windows[:, 1:][ex.windows[:, 1:] >= 0]
        counts = torch.from_numpy(np.bincount(targets, minlength=len(ex.catalogue))).to(device)
        model.net.support[ids] = (1 + torch.log2(counts.clamp(min=1).float()).floor().long()).clamp(max=SUPPORT_BUCKETS - 1)
        model.net.no_id_offset.fill_(hybrid.new_item_offset)
    return model, text


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
    validation_users: int | str | None = AUTO_VALIDATION,
) -> tuple[Hybrid, TrainResult]:
    """Train a hybrid (or, with hybrid.experimental.text false, SASRec) model; nothing is saved (see `train_hybrid`). With validation,
    the last consumption of `validation_users` users (None = all) is held out (`llmrec.data.sequences.hold_out_last`):
    training keeps the best step's weights and the parts' blend is chosen on it (`llmrec.training.blend`)."""
    dist, device = start_training(train_params)
    config = HybridConfig.from_params(hybrid)
    if hybrid.experimental.age is None:  # freshness matters where items go stale: logs with impressions (news)
        config = replace(config, age=train.source.logged_negatives)
    ex = _examples(train, config, hybrid, train_params, validation_users, device)
    model, text = _build(train, ex, config, hybrid, backbone, max_length, train_params.seed, device, progress and dist.is_main)
    ids = model.item_rows(ex.catalogue)
    full = len(ex.catalogue) <= hybrid.full_softmax_max_items
    scoring = Scoring(text, ids, ex.first_seen, not train.source.logged_negatives, device)
    if dist.is_main:
        _log_setup(desc, ex, model, hybrid, train, full)
    task = LoopTask(
        module=model.net,
        param_groups=_param_groups(model.net, train_params.lr * lr_scale),
        validate=(lambda: validation_ndcg_full(model.net, scoring, ex.held)) if ex.held is not None else None,
        metric="ndcg_full",  # nDCG over the whole ranking, no cut-off
        n_examples=len(ex.windows),
        loss=_loss(model, ex, text, ids, config, hybrid, full, scoring.consumed_only, train_params.seed + 1 + dist.rank, device),
        digest=checkpoint_digest(ModelParams(hybrid=hybrid, backbone=backbone, max_length=max_length), train_params,
                                 pd.DataFrame(ex.windows), model="hybrid", catalogue=len(ex.catalogue)),
        pairs_per_example=config.sequence_length,
        lengths=(ex.windows >= 0).sum(1),  # batches of similar lengths: the encoder skips columns that are padding in every row
        desc=desc,
    )
    result = run_loop(task, train_params, out, device, dist, on_step=on_step, progress=progress)
    if ex.held is not None and len(model.net.part_columns()) > 1:
        held = replace(ex.held, shown=_shown(train, ex, train_params.seed))
        choice = choose_blend(model.net, scoring, held)
        if dist.is_main:
            where = "clicks among their impressions" if held.shown is not None else "consumptions over the catalogue"
            log.info("%s: %s, on %d held-out %s; weights per support group %s, age offset %.2f", desc, choice.describe(),
                     len(held.answer), where, choice.weights, choice.offsets)
    if config.text and dist.is_main:
        log.info("%s: %s", desc, text_weights(model.net))
    model.net.eval()
    return model, train_result(out, result, len(ex.windows), device)


def _log_setup(desc: str, ex: _Examples, model: Hybrid, hybrid: HybridParams, train: Dataset, full: bool) -> None:
    targets = int((ex.windows[:, 1:] >= 0).sum())
    if model.net.ease_items:
        log.info("%s: EASE weights of the %d most consumed items", desc, model.net.ease_items)
    if ex.impressions is not None:
        log.info("%s: impression loss (weight %g) on %d clicks, each against its impression's logged non-clicks",
                 desc, hybrid.experimental.impression_loss, int((ex.impressions[0] >= 0).sum()))
    elif hybrid.experimental.impression_loss and model.config.ids and train.source.logged_negatives and not full:
        log.info("%s: no impression loss: the catalogue (%d items) is above model.hybrid.full_softmax_max_items, so the "
                 "softmax runs over in-batch negatives that do not include the impressions' non-clicks", desc, len(ex.catalogue))
    log.info("%s: %d sequences -> %d windows of %d, %d targets; catalogue %d items (%d with ids), %s softmax",
             desc, len(ex.sequences), len(ex.windows), model.config.sequence_length, targets, len(ex.catalogue), len(ex.vocab),
             "full" if full else "in-batch (log-Q corrected)")
    if ex.held is not None:
        log.info("%s: validating on the last consumption of %d users (held out of training)", desc, len(ex.held.answer))


def _shown(train: Dataset, ex: _Examples, seed: int) -> list[list[int] | None] | None:
    """On logs with impressions, each held-out click's impression's logged items (the blend is then chosen on how each
    click ranks among them, the ranking impressions ask for); None on other logs."""
    if ex.held is None:
        return None
    found = impression_negatives(train, ex.row, seed, cap=None)
    shown = [found.get((user, ex.catalogue[answer], float(hours + ex.hours_base)))
             for user, answer, hours in zip(ex.held_users, ex.held.answer, ex.held.hours)]
    return shown if sum(bool(s) for s in shown) >= min(100, len(shown)) else None


def _loss(model: Hybrid, ex: _Examples, text: torch.Tensor | None, ids: torch.Tensor, config: HybridConfig, hybrid: HybridParams,
          full: bool, consumed_only: bool, seed: int, device: torch.device) -> Callable[[torch.nn.Module, np.ndarray], torch.Tensor]:
    """The training loss of a batch of windows: the next-item softmax, plus the text part alone, the id part alone and,
    on logs with impressions, each click against its own impression's non-clicks."""
    targets = ex.windows[:, 1:][ex.windows[:, 1:] >= 0]
    log_q = torch.log(torch.from_numpy(np.bincount(targets, minlength=len(ex.catalogue)) + 1.0) / (len(targets) + len(ex.catalogue))).float().to(device)
    generator = np.random.default_rng(seed)
    groups, table = ex.impressions if ex.impressions is not None else (None, None)

    def loss(module: torch.nn.Module, idx: np.ndarray) -> torch.Tensor:
        chunk = torch.from_numpy(ex.windows[idx]).to(device)
        inputs, target = chunk[:, :-1], chunk[:, 1:]
        step_ids = ids
        if config.ids and config.id_dropout and module.training:
            keep = torch.from_numpy(generator.random(len(ex.catalogue)) >= config.id_dropout).to(device)
            step_ids = torch.where(keep, ids, torch.full_like(ids, UNKNOWN))
        logits, answer, text_logits, id_logits = module(text, step_ids, inputs, target, None if full else log_q,
                                                        ex.window_hours[idx][:, 1:].to(device), ex.first_seen, consumed_only)
        value = torch.nn.functional.cross_entropy(logits.float(), answer)
        if groups is not None:  # each click against its own impression's non-clicks: the ranking impressions ask for
            group = torch.from_numpy(groups[idx][:, 1:][ex.windows[idx][:, 1:] >= 0]).to(device)
            logged = group >= 0
            if logged.any():
                value = value + hybrid.experimental.impression_loss * impression_cross_entropy(logits[logged], answer[logged], table[group[logged]])
        if text_logits is not None:
            value = value + config.text_loss * torch.nn.functional.cross_entropy(text_logits.float(), answer)
        if id_logits is not None:  # targets whose id is dropped this step have no id-only answer
            has_id = torch.isfinite(id_logits.gather(1, answer.unsqueeze(1))).squeeze(1)
            if has_id.any():
                value = value + config.id_loss * torch.nn.functional.cross_entropy(id_logits[has_id].float(), answer[has_id])
        return value

    return loss


def text_weights(net: HybridNet) -> str:
    """The learned weight of the text part for items without an id and, as a median over support buckets, with one."""
    def describe(weights: torch.Tensor) -> str:
        used = torch.unique(net.support[1:]) if len(net.support) > 1 else torch.zeros(0, dtype=torch.long)
        known = weights[used[used > 0]]
        return f"{float(weights[0]):.2f} without an id, {float(known.median()):.2f} with one" if len(known) else f"{float(weights[0]):.2f}"
    return f"text weight {describe(net.text_scale.detach())}"


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
    save_trained(model, out, Distributed.from_env(model.device))
    return result
