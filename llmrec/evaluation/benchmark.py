"""The community's standard offline protocol, for comparing with published numbers (`llmrec benchmark`).

Leave-last-out on each user's consumption sequence (Kang & McAuley 2018 and most sequential-recommendation
papers since): users with at least `min_events` consumptions are kept; a user's last consumption is the
test item, the one before it the validation item, the rest train. Same-second consumptions keep the source
file's order. Each test item is ranked
- sampled: against `negatives` (99) items drawn uniformly, once, with a fixed seed, from the items the user
  never consumed;
- full: against every item of the log minus every item the user consumed before it.
Two labelled variants of what a model reads at test time:
- train-only: the history is the train items; the collaborative baselines are fitted on train;
- train+val: the validation item joins the history and the collaborative baselines are refitted on train +
  validation (sequence models keep the weights their early stopping chose).
Every setting is chosen on the validation items, never on the test items: EASE's l2 and ItemKNN's
neighbours by validation nDCG@10, SASRec's and the hybrid's training length by early stopping. Tied
scores count in expectation (constant scores over 100 candidates give HR@10 = 0.1).

Each model's per-user metrics are saved as soon as it is done (`<out>/models/<name>.parquet` + `.json`,
keyed by a digest of the data, the protocol and the model's settings), so a run that stops resumes model
by model and gives the same table. The leaderboard (markdown, JSON, one plot) has bootstrap intervals and
paired differences.

How it differs from `llmrec evaluate`: `evaluate` scores what production faces (a temporal holdout of
logged impressions, negatives only among items known at the time, the champion side by side) and feeds
the promotion policy; this protocol ignores time across users and exists to put llmrec next to papers.

Why one module this long: the standard protocol, its models and its leaderboard are one page a user reads to
know what `llmrec benchmark` measured.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from llmrec.data.checks import implicit_impressions
from llmrec.data.context import AGE_TOLERANCE_HOURS, hours
from llmrec.data.contract import Dataset, SourceInfo
from llmrec.errors import ConfigError, DataError
from llmrec.evaluation.stats import bootstrap_intervals, paired_bootstrap
from llmrec.rank_metrics import single_positive_metrics

log = logging.getLogger(__name__)

VARIANTS = ("train-only", "train+val")
SAMPLED, FULL = "sampled", "full"
BASELINES = ("random", "popularity", "tfidf", "zero_shot", "itemknn", "ease", "sasrec")
MODELS = ("hybrid",)
DEFAULT_MODELS = ("popularity", "itemknn", "ease", "sasrec", "hybrid")
HEADLINE = "ndcg@10"
WITH_INTERVALS = ("ndcg@10", "hr@10", "mrr")  # the leaderboard's columns with intervals (the others: means)
CELLS = 1 << 22  # user x item scores materialised at once (32 MiB of float64)


@dataclass(frozen=True)
class StandardProtocol:
    min_events: int = 5
    negatives: int = 99
    seed: int = 13
    ks: tuple[int, ...] = (1, 5, 10, 20)
    confidence: float = 0.95

    def describe(self) -> str:
        return (f"leave-last-out, users with >= {self.min_events} consumptions, {self.negatives} negatives drawn uniformly "
                f"from the items a user never consumed (seed {self.seed}), full ranking minus every earlier consumption")


@dataclass
class StandardSplit:
    """The standard protocol's split of one log (see the module docstring)."""

    items: pd.DataFrame                  # the item table (texts for text models)
    catalogue: pd.Index                  # the items ranked: every item of the kept users' consumptions
    users: pd.Index
    train: Dataset                       # all but each user's last two consumptions (positive-only events)
    train_val: Dataset                   # all but each user's last one
    histories: dict[str, list[list[str]]]  # variant -> per user, item ids oldest first
    test: np.ndarray                     # catalogue position of each user's test item
    consumed: list[np.ndarray]           # per user: catalogue positions consumed before the test (full ranking skips them)
    negatives: np.ndarray                # users x negatives, catalogue positions
    test_hours: np.ndarray               # time of each test consumption, hours since the epoch
    digest: str

    def fit_data(self, variant: str) -> Dataset:
        return self.train if variant == VARIANTS[0] else self.train_val


def consumption_events(dataset: Dataset) -> pd.DataFrame:
    """user_id, item_id, timestamp of every consumption (label 1), each user's in time order, same-second ones in
    the order of the interactions table (the file's)."""
    pos = dataset.interactions.loc[dataset.interactions["label"] == 1, ["user_id", "item_id", "timestamp"]]
    return pos.sort_values(["user_id", "timestamp"], kind="stable").reset_index(drop=True)


def standard_split(dataset: Dataset, protocol: StandardProtocol) -> StandardSplit:
    """The standard protocol's split and sampled negatives (the same for a log, protocol and seed)."""
    events = consumption_events(dataset)
    counts = events.groupby("user_id", sort=False)["item_id"].transform("size")
    events = events[counts >= protocol.min_events].reset_index(drop=True)
    if events.empty:
        raise DataError(f"no user has {protocol.min_events} or more consumptions", fix="lower --min-events or use a larger log")
    position = events.groupby("user_id", sort=False).cumcount()
    n = events.groupby("user_id", sort=False)["item_id"].transform("size")
    imps, inter = implicit_impressions(events)  # one impression per consumption, ids user#k in this order
    source = SourceInfo(dataset.source.format, explicit_history=False, logged_negatives=False)
    event_ids = events["user_id"].astype(str) + "#" + position.astype(str)
    log_data = Dataset(dataset.items, imps, inter, source)
    train = log_data.restrict(event_ids[position < n - 2])
    train_val = log_data.restrict(event_ids[position < n - 1])
    catalogue = pd.Index(np.sort(events["item_id"].astype(str).unique()))
    users = pd.Index(events["user_id"].astype(str).unique())
    items_of = events.groupby("user_id", sort=False)["item_id"].agg(list)
    seqs = [list(map(str, items_of[u])) for u in users]
    histories = {VARIANTS[0]: [s[:-2] for s in seqs], VARIANTS[1]: [s[:-1] for s in seqs]}
    test = catalogue.get_indexer([s[-1] for s in seqs])
    consumed = [catalogue.get_indexer(list(dict.fromkeys(s[:-1]))) for s in seqs]
    last = events.groupby("user_id", sort=False)["timestamp"].last()
    negatives = _sample_negatives(seqs, catalogue, protocol)
    digest = _digest(events, dataset.items, protocol)
    return StandardSplit(dataset.items, catalogue, users, train, train_val, histories, test, consumed, negatives,
                         hours(last.reindex(users).reset_index(drop=True)), digest)


def _sample_negatives(sequences: list[list[str]], catalogue: pd.Index, protocol: StandardProtocol) -> np.ndarray:
    """Per user, `negatives` distinct catalogue positions the user never consumed, uniformly (rejection sampling); a user
    who left fewer unconsumed gets them all, the rest of the row is -1 (no candidate)."""
    rng = np.random.default_rng(protocol.seed)
    out = np.full((len(sequences), protocol.negatives), -1, dtype=np.int64)
    short = 0
    for u, seq in enumerate(sequences):
        own = set(catalogue.get_indexer(seq).tolist())
        if len(catalogue) - len(own) <= protocol.negatives:
            rest = np.setdiff1d(np.arange(len(catalogue)), list(own))
            out[u, : len(rest)] = rest
            short += len(rest) < protocol.negatives
            continue
        picks: list[int] = []
        chosen: set[int] = set()
        while len(picks) < protocol.negatives:
            for j in rng.integers(0, len(catalogue), size=2 * protocol.negatives).tolist():
                if j not in own and j not in chosen:
                    chosen.add(j)
                    picks.append(j)
                    if len(picks) == protocol.negatives:
                        break
        out[u] = picks
    if short:
        log.warning("benchmark: %d user(s) consumed all but fewer than %d items: they are ranked against all the items they "
                    "never consumed", short, protocol.negatives)
    return out


def _digest(events: pd.DataFrame, items: pd.DataFrame, protocol: StandardProtocol) -> str:
    h = hashlib.sha256()
    h.update(pd.util.hash_pandas_object(events, index=False).to_numpy().tobytes())
    h.update(pd.util.hash_pandas_object(items.astype(str), index=False).to_numpy().tobytes())
    h.update(json.dumps([protocol.min_events, protocol.negatives, protocol.seed, list(protocol.ks)]).encode())
    return h.hexdigest()[:16]


# -- scoring ------------------------------------------------------------------------------------------------------
UserScores = Callable[[np.ndarray], np.ndarray]  # user positions -> (len, catalogue) scores


@dataclass
class Fitted:
    """A model fitted for the benchmark: a scorer per variant, and what the report says of it."""

    scores: dict[str, UserScores]
    setting: str = ""
    seconds: float = 0.0


def per_user_metrics(split: StandardSplit, score: UserScores, ks: tuple[int, ...], desc: str = "", progress: bool = False,
                     ) -> dict[str, pd.DataFrame]:
    """{protocol: per-user frame (impression_id = user, mrr, ndcg@k, hr@k)} of one variant's scorer."""
    from tqdm.auto import tqdm

    n_items = len(split.catalogue)
    step = max(1, CELLS // max(1, n_items))
    counts: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {SAMPLED: [], FULL: []}
    for start in tqdm(range(0, len(split.users), step), desc=desc or "scoring", disable=not progress, unit="block"):
        rows = np.arange(start, min(start + step, len(split.users)))
        scores = np.asarray(score(rows), dtype=np.float64)
        if scores.shape != (len(rows), n_items) or not np.isfinite(scores).all():
            raise ValueError(f"{desc}: scores must be finite, one per (user, item), shape {(len(rows), n_items)}; got {scores.shape}")
        at = np.arange(len(rows))
        right = scores[at, split.test[rows]]
        negatives = split.negatives[rows]
        sampled = np.where(negatives >= 0, np.take_along_axis(scores, np.maximum(negatives, 0), axis=1), -np.inf)
        counts[SAMPLED].append(((sampled > right[:, None]).sum(1), (sampled == right[:, None]).sum(1)))
        for k, u in enumerate(rows):  # full ranking: every earlier consumption is out (the test item itself stays in)
            drop = split.consumed[u][split.consumed[u] != split.test[u]]
            scores[k, drop] = -np.inf
        counts[FULL].append(((scores > right[:, None]).sum(1), (scores == right[:, None]).sum(1) - 1))
    out = {}
    for protocol, parts in counts.items():
        greater = np.concatenate([g for g, _ in parts])
        equal = np.concatenate([e for _, e in parts])
        out[protocol] = pd.DataFrame({"impression_id": split.users.to_numpy(), **single_positive_metrics(greater, equal, ks)})
    return out


def _collaborative(split: StandardSplit, variant: str, weights: Callable[[Dataset], tuple[pd.Index, object]]) -> UserScores:
    """Scores history @ W of an item-item model fitted on the variant's data (items it does not know score 0)."""
    from llmrec.models.collaborative import history_matrix

    index, W = weights(split.fit_data(variant))
    columns = split.catalogue.get_indexer(index)

    def score(rows: np.ndarray) -> np.ndarray:
        H = history_matrix([split.histories[variant][u] for u in rows], index)
        product = H @ W
        product = product.toarray() if hasattr(product, "toarray") else np.asarray(product)
        out = np.zeros((len(rows), len(split.catalogue)))
        out[:, columns[columns >= 0]] = product[:, columns >= 0]
        return out

    return score


def _from_frame_scorer(split: StandardSplit, variant: str, scorer: Callable[[pd.DataFrame], np.ndarray]) -> UserScores:
    """A frame scorer (history string x item id rows) as a user x catalogue scorer."""
    items = split.catalogue.to_numpy()

    def score(rows: np.ndarray) -> np.ndarray:
        history = [" ".join(split.histories[variant][u]) for u in rows]
        frame = pd.DataFrame({"impression_id": np.repeat(split.users.to_numpy()[rows], len(items)),
                              "history": np.repeat(np.asarray(history, dtype=object), len(items)),
                              "item_id": np.tile(items, len(rows)), "label": np.int8(0)})
        return np.asarray(scorer(frame), dtype=np.float64).reshape(len(rows), len(items))

    return score


def _sequence_model(split: StandardSplit, variant: str, model: object) -> UserScores:
    """A hybrid / SASRec model: user vectors of the variant's histories times the catalogue's item vectors (one
    matrix product), with the age offset of each item at the user's test time; items it cannot score last."""
    import torch

    from llmrec.data.context import first_seen_hours
    from llmrec.evaluation.baselines import UNSCORABLE
    from llmrec.models.text import item_texts

    texts = item_texts(split.items, model.text)
    ids = split.catalogue.tolist()
    vectors, bias = model.item_vectors(ids, texts)
    first = first_seen_hours(split.fit_data(variant)).reindex(split.catalogue).to_numpy(dtype=np.float64)
    usable = np.asarray([i in texts if model.config.text else i in model.row for i in ids])

    def score(rows: np.ndarray) -> np.ndarray:
        users = model.user_vectors([split.histories[variant][u] for u in rows], texts)
        age = split.test_hours[rows][:, None] - first[None, :]
        age = np.where(age > AGE_TOLERANCE_HOURS, age, np.nan)  # not consumed before: unknown, as in training
        with torch.inference_mode():
            out = users @ vectors.T / model.config.temperature + bias
            out = out + model.net.age_bias(torch.from_numpy(age.astype(np.float32)).to(out.device))
        return np.where(usable, out.double().cpu().numpy(), UNSCORABLE)

    return score


# -- models ---------------------------------------------------------------------------------------------------------
@dataclass
class BenchmarkSettings:
    """What the models are built from: llmrec's params (the hybrid, SASRec's settings, the backbone, the device)."""

    params: object  # llmrec.config.Params
    progress: bool = True


def fit_model(name: str, split: StandardSplit, settings: BenchmarkSettings) -> Fitted:
    """Fit one benchmark model (see BASELINES, MODELS) on the split; settings chosen on the validation items."""
    from llmrec.evaluation import baselines as bl
    from llmrec.models.collaborative import ease_matrix, itemknn_matrix, most_consumed
    from llmrec.models.tuning import choose_ease_l2, choose_itemknn_neighbours, validation_slice

    params, started = settings.params, time.perf_counter()
    if name == "random":
        def random_scores(rows: np.ndarray) -> np.ndarray:
            return np.random.default_rng([params.eval.seed, int(rows[0])]).random((len(rows), len(split.catalogue)))
        fitted = Fitted({v: random_scores for v in VARIANTS}, "uniform scores, seeded")
    elif name == "popularity":
        def popularity(variant: str) -> UserScores:
            data = split.fit_data(variant)
            counts = data.interactions["item_id"].astype(str).value_counts().reindex(split.catalogue).fillna(0).to_numpy()
            return lambda rows: np.broadcast_to(counts, (len(rows), len(counts))).copy()
        fitted = Fitted({v: popularity(v) for v in VARIANTS}, "consumptions in the fitted data")
    elif name in ("ease", "itemknn"):
        part = validation_slice(split.train_val, users=None)  # the validation items; fitted on train
        if name == "ease":
            choice = choose_ease_l2(part, bl.EASE_L2, bl.EASE_MAX_ITEMS)

            def weights(data: Dataset) -> tuple[pd.Index, object]:
                X, index = bl.consumption_matrix(data)
                top = most_consumed(X, bl.EASE_MAX_ITEMS)
                return index[top], ease_matrix(X[:, top], choice.value)
            setting = choice.describe("l2")
        else:
            choice = choose_itemknn_neighbours(part, bl.ITEMKNN_NEIGHBOURS, bl.ITEMKNN_SHRINK)

            def weights(data: Dataset) -> tuple[pd.Index, object]:
                X, index = bl.consumption_matrix(data)
                return index, itemknn_matrix(X, int(choice.value), bl.ITEMKNN_SHRINK)
            setting = choice.describe("neighbours") + f", shrink {bl.ITEMKNN_SHRINK:g}"
        fitted = Fitted({v: _collaborative(split, v, weights) for v in VARIANTS}, setting + "; refitted on the variant's data")
    elif name in ("tfidf", "zero_shot"):
        def text_model(variant: str) -> UserScores:
            scorer = (bl.tfidf_scorer(split.fit_data(variant), split.items) if name == "tfidf" else
                      bl.zero_shot_scorer(split.items, params.model.backbone, params.eval.batch_size, params.train.device))
            return _from_frame_scorer(split, variant, scorer)
        fitted = Fitted({v: text_model(v) for v in VARIANTS}, "content only (item texts)")
    elif name == "sasrec":
        baseline = bl.sasrec_scorer(split.train_val, split.items, params.eval.sasrec, params.eval.seed, params.train.device,
                                    settings.progress, validation_users=None)
        model = baseline.fitted["model"]
        fitted = Fitted({v: _sequence_model(split, v, model) for v in VARIANTS}, baseline.setting)
    elif name == "hybrid":
        model, length = _fit_hybrid(split, params, settings.progress)
        fitted = Fitted({v: _sequence_model(split, v, model) for v in VARIANTS}, length)
    else:
        raise ConfigError(f"unknown benchmark model {name!r}", fix=f"choose from {', '.join(BASELINES + MODELS)}")
    fitted.seconds = time.perf_counter() - started
    return fitted


def _fit_hybrid(split: StandardSplit, params: object, progress: bool) -> tuple[object, str]:
    """The hybrid as params.yaml (and --budget) configure it, validated on the validation items."""
    from llmrec.training.hybrid import fit_hybrid

    train = params.train
    if not train.validates:  # the validation items are held out in every case; without validation they would be wasted
        train = train.model_copy(update={"eval_every_epochs": 1.0})
        log.warning("benchmark: the hybrid validates every epoch on the validation items (train.eval_every was 0)")
    with tempfile.TemporaryDirectory() as out:
        model, result = fit_hybrid(split.train_val, params.model.hybrid, train, out, backbone=params.model.backbone,
                                   max_length=params.model.max_length, progress=progress, desc="training the hybrid",
                                   validation_users=None)
    budget = f"budget {params.budget}; " if params.budget else ""
    flag = f"; {result.note}" if result.under_trained else ""
    return model, f"{budget}{result.length()}, {result.seconds:.0f} s{flag}"


# -- the run ----------------------------------------------------------------------------------------------------------
@dataclass
class ModelResult:
    name: str
    metrics: dict[str, dict[str, pd.DataFrame]]  # variant -> protocol -> per-user frame
    setting: str
    seconds: float


def _model_digest(name: str, split: StandardSplit, params: object, code: str) -> str:
    """What a model's result depends on: the data and protocol, its settings, and the code (commit or version)."""
    relevant: dict = {"name": name, "split": split.digest, "seed": params.eval.seed, "code": code}
    if name == "sasrec":
        relevant["sasrec"] = params.eval.sasrec.model_dump()
    if name == "hybrid":
        relevant["model"] = params.model.model_dump()
        relevant["train"] = {k: v for k, v in params.train.model_dump().items() if k not in ("out", "checkpoint_every", "resume")}
    if name == "zero_shot":
        relevant["backbone"] = params.model.backbone
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _load_result(folder: Path, name: str, digest: str) -> ModelResult | None:
    meta, table = folder / f"{name}.json", folder / f"{name}.parquet"
    if not (meta.is_file() and table.is_file()):
        return None
    info = json.loads(meta.read_text())
    if info.get("digest") != digest:
        return None
    frame = pd.read_parquet(table)
    metrics = {v: {p: g.drop(columns=["variant", "protocol"]).reset_index(drop=True)
                   for p, g in frame[frame["variant"] == v].groupby("protocol", sort=False)} for v in VARIANTS}
    return ModelResult(name, metrics, info["setting"], info["seconds"])


def _save_result(folder: Path, result: ModelResult, digest: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    frames = [f.assign(variant=v, protocol=p) for v, by in result.metrics.items() for p, f in by.items()]
    tmp = folder / f".{result.name}.parquet.tmp"
    pd.concat(frames, ignore_index=True).to_parquet(tmp, index=False)
    tmp.replace(folder / f"{result.name}.parquet")
    meta = folder / f".{result.name}.json.tmp"  # written last: its presence marks the model done
    meta.write_text(json.dumps({"digest": digest, "setting": result.setting, "seconds": result.seconds}, indent=2))
    meta.replace(folder / f"{result.name}.json")


def run_benchmark(dataset: Dataset, names: list[str], out: str | Path, params: object, protocol: StandardProtocol,
                  progress: bool = True, source: str = "") -> dict:
    """Score each named model under the standard protocol (resuming models already done) and write the leaderboard."""
    unknown = [n for n in names if n not in BASELINES + MODELS]
    if unknown:
        raise ConfigError(f"unknown benchmark model(s) {', '.join(unknown)}", fix=f"choose from {', '.join(BASELINES + MODELS)}")
    if not names:
        raise ConfigError("no model to benchmark", fix=f"name some of {', '.join(BASELINES + MODELS)}")
    out = Path(out)
    split = standard_split(dataset, protocol)
    log.info("benchmark: %d users, %d items, %d consumptions (%s)", len(split.users), len(split.catalogue),
             len(split.train_val.interactions) + len(split.users), protocol.describe())
    results, code = {}, _run_info()["commit"]
    for k, name in enumerate(names, start=1):
        digest = _model_digest(name, split, params, code)
        done = _load_result(out / "models", name, digest)
        if done is not None:
            log.info("benchmark [%d/%d] %s: done earlier, read from %s", k, len(names), name, out / "models")
            results[name] = done
            continue
        log.info("benchmark [%d/%d] %s: fitting", k, len(names), name)
        fitted = fit_model(name, split, BenchmarkSettings(params, progress))
        metrics = {v: per_user_metrics(split, fitted.scores[v], protocol.ks, f"{name} ({v})", progress) for v in VARIANTS}
        results[name] = ModelResult(name, metrics, fitted.setting, round(fitted.seconds, 1))
        _save_result(out / "models", results[name], digest)
        log.info("benchmark [%d/%d] %s: nDCG@10 sampled %.4f, full %.4f (%s)", k, len(names), name,
                 metrics[VARIANTS[0]][SAMPLED][HEADLINE].mean(), metrics[VARIANTS[0]][FULL][HEADLINE].mean(), fitted.setting)
    board = leaderboard(results, split, protocol, source)
    write_leaderboard(board, out)
    return board


def leaderboard(results: dict[str, ModelResult], split: StandardSplit, protocol: StandardProtocol, source: str = "") -> dict:
    """Means with bootstrap intervals per variant, protocol and model, and paired differences on nDCG@10: each llmrec model
    against each baseline (without one, the best model against each other)."""
    columns = [*WITH_INTERVALS, *(f"{m}@{k}" for m in ("hr", "ndcg") for k in protocol.ks if k != 10 and (m, k) != ("ndcg", 1))]
    tables: dict = {}
    pairs: list[dict] = []
    for variant in VARIANTS:
        for proto in (SAMPLED, FULL):
            rows = {}
            for name, result in results.items():
                per = result.metrics[variant][proto]
                ci = bootstrap_intervals(per, columns, confidence=protocol.confidence, seed=protocol.seed)
                rows[name] = {c: {"mean": float(per[c].mean()), "low": ci[c][0], "high": ci[c][1]} for c in columns}
            tables.setdefault(variant, {})[proto] = rows
            mine = [n for n in results if n in MODELS]
            if mine:
                versus = [(m, b) for m in mine for b in results if b not in MODELS]
            else:
                ranked = sorted(results, key=lambda n: -rows[n][HEADLINE]["mean"])
                versus = [(ranked[0], b) for b in ranked[1:]]
            for a, b in versus:
                comp = paired_bootstrap(results[a].metrics[variant][proto], results[b].metrics[variant][proto], HEADLINE,
                                        confidence=protocol.confidence, seed=protocol.seed)
                pairs.append({"variant": variant, "protocol": proto, "model": a, "versus": b, **comp})
    return {
        "source": source,
        "protocol": {"description": protocol.describe(), "min_events": protocol.min_events, "negatives": protocol.negatives,
                     "seed": protocol.seed, "confidence": protocol.confidence},
        "data": {"users": len(split.users), "items": len(split.catalogue), "digest": split.digest,
                 "consumptions": int(len(split.train_val.interactions) + len(split.users))},
        "models": {n: {"setting": r.setting, "seconds": r.seconds} for n, r in results.items()},
        "tables": tables,
        "paired": pairs,
        "run": _run_info(),
    }


def _run_info() -> dict:
    import subprocess

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10,
                                cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    if not commit:
        from importlib.metadata import PackageNotFoundError, version

        try:
            commit = f"llmrec {version('llmrec')}"
        except PackageNotFoundError:
            commit = "unknown"
    return {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "commit": commit,
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
            "load_average": [round(x, 2) for x in os.getloadavg()]}


def to_markdown(board: dict) -> str:
    """The leaderboard as markdown: one table per variant and protocol, paired differences, model settings."""
    run, data = board["run"], board["data"]
    lines = ["# Benchmark: the standard protocol", "",
             f"Data: {board['source'] or '(in memory)'}: {data['users']:,} users, {data['items']:,} items, "
             f"{data['consumptions']:,} consumptions. Protocol: {board['protocol']['description']}.",
             f"Run: {run['date']}, commit {run['commit']}, {run['machine']}, load average {run['load_average']}.",
             f"Means with {board['protocol']['confidence']:.0%} bootstrap intervals over users; ties count in expectation.", ""]
    for variant, by_protocol in board["tables"].items():
        for proto, rows in by_protocol.items():
            columns = list(next(iter(rows.values())))
            lines += [f"## {variant} histories, {proto} ranking", "",
                      "| model | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
            for name in sorted(rows, key=lambda n: -rows[n][HEADLINE]["mean"]):
                cells = [f"{v['mean']:.4f} [{v['low']:.3f}, {v['high']:.3f}]" if c in WITH_INTERVALS else f"{v['mean']:.4f}"
                         for c, v in rows[name].items()]
                lines.append(f"| {name} | " + " | ".join(cells) + " |")
            lines.append("")
    if board["paired"]:
        lines += ["## Paired differences (nDCG@10)", "", "| histories | ranking | difference | value | interval |",
                  "|---|---|---|---:|---|"]
        lines += [f"| {p['variant']} | {p['protocol']} | {p['model']} − {p['versus']} | {p['difference']:+.4f} | "
                  f"[{p['low']:+.4f}, {p['high']:+.4f}] |" for p in board["paired"]]
        lines.append("")
    lines += ["## Models", "", "Settings chosen on the validation items (each user's second-to-last consumption).", ""]
    lines += [f"- **{n}** ({m['seconds']:.0f} s): {m['setting']}" for n, m in board["models"].items()]
    return "\n".join(lines) + "\n"


def write_leaderboard(board: dict, out: str | Path) -> dict[str, Path]:
    """leaderboard.md, leaderboard.json and leaderboard.png under `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out / "leaderboard.md", "json": out / "leaderboard.json", "plot": out / "leaderboard.png"}
    paths["markdown"].write_text(to_markdown(board))
    paths["json"].write_text(json.dumps(board, indent=2))
    _plot(board, paths["plot"])
    return paths


def _plot(board: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tables = board["tables"]
    fig, axes = plt.subplots(len(tables), 2, figsize=(10, 3.2 * len(tables)), squeeze=False)
    for r, (variant, by_protocol) in enumerate(tables.items()):
        for c, (proto, rows) in enumerate(by_protocol.items()):
            ax = axes[r][c]
            names = sorted(rows, key=lambda n: rows[n][HEADLINE]["mean"])
            means = np.array([rows[n][HEADLINE]["mean"] for n in names])
            errors = np.array([[means[k] - rows[n][HEADLINE]["low"], rows[n][HEADLINE]["high"] - means[k]] for k, n in enumerate(names)]).T
            ax.barh(names, means, xerr=errors, color=["#c44e52" if n in MODELS else "#4c72b0" for n in names], capsize=3)
            ax.set(title=f"{variant} histories, {proto} ranking", xlabel="nDCG@10")
            ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
