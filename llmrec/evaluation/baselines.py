"""Baselines without fine-tuning: content (TF-IDF, zero-shot backbone) and collaborative (ItemKNN, EASE).

Each `*_scorer` fits on the training slice and returns a Scorer (frame -> one score per row).
Collaborative models learn from the binary user x item consumption matrix of `consumption_matrix`:
a user's label-1 training interactions plus the items of their training impressions' `history`.
At scoring time a user is only the row's `history` (items consumed before that impression), never
a user id, so no scorer can see the future. Scoring is vectorised and runs in bounded blocks, so
logged candidate lists and full-catalogue frames (every impression x every item) both work.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.preprocessing import normalize

from llmrec.data.contract import Dataset
from llmrec.data.sequences import AUTO as AUTO_VALIDATION
from llmrec.errors import ConfigError
from llmrec.models.collaborative import ease_matrix, itemknn_matrix, most_consumed
from llmrec.models.tuning import ValidationSlice, choose_ease_l2, choose_itemknn_neighbours, validation_slice

log = logging.getLogger(__name__)

__all__ = ["ease_matrix", "most_consumed"]  # re-exported: the hybrid's EASE part and older callers import them here

Scorer = Callable[[pd.DataFrame], np.ndarray]  # = llmrec.evaluation.evaluate.Scorer (no import: no cycle)


@dataclass
class Baseline:
    """A fitted baseline: its scorer and what was chosen for it (setting, training length), which the report states."""

    score: Scorer
    setting: str = ""
    fitted: dict = field(default_factory=dict, repr=False)  # what a caller may reuse (e.g. the trained SASRec model)

    def __call__(self, frame: pd.DataFrame) -> np.ndarray:
        return self.score(frame)
UNSCORABLE = -1.0e9  # the score of an item a baseline cannot score (below every real score)
NAMES = ("random", "popularity", "tfidf", "zero_shot", "itemknn", "ease", "sasrec")
BLOCK = 1 << 22  # values materialised at once while scoring (32 MiB of float64)


def consumption_matrix(train: Dataset) -> tuple[sp.csr_matrix, pd.Index]:
    """Binary user x item matrix of the training slice (clicks + histories) and its item ids."""
    inter, imps = train.interactions, train.impressions
    clicks = inter.loc[inter["label"] == 1, ["user_id", "item_id"]]
    hist = imps.assign(item_id=imps["history"].fillna("").str.split()).explode("item_id")
    pairs = pd.concat([clicks, hist[["user_id", "item_id"]].dropna()]).drop_duplicates()
    users, uids = pd.factorize(pairs["user_id"], sort=True)
    items, ids = pd.factorize(pairs["item_id"], sort=True)
    X = sp.csr_matrix((np.ones(len(pairs)), (users, items)), shape=(len(uids), len(ids)))
    return X, pd.Index(ids)


def _encode(frame: pd.DataFrame, index: pd.Index) -> tuple[np.ndarray, sp.csr_matrix, np.ndarray]:
    """Per row: its unique-history code and candidate column (-1: unknown item);
    H: unique history x item, binary, unknown ids dropped."""
    codes, uniques = pd.factorize(frame["history"].fillna("").to_numpy(dtype=object))
    tokens = pd.Series(uniques, dtype=object).str.split().explode()
    cols = index.get_indexer(tokens.to_numpy())
    ok = cols >= 0
    H = sp.csr_matrix((np.ones(ok.sum()), (tokens.index.to_numpy()[ok], cols[ok])), shape=(len(uniques), len(index)))
    H.data[:] = 1.0  # a repeated history item counts once
    H.sort_indices()
    return codes, H, index.get_indexer(frame["item_id"].to_numpy())


@dataclass
class ItemItemScorer:
    """score = sum over history items h of matrix[h, candidate] (ItemKNN, EASE); unknown items add 0."""

    index: pd.Index                       # item id of each row/column of `matrix`
    matrix: np.ndarray | sp.csr_matrix    # item x item weights, matrix[h, c]

    def __call__(self, frame: pd.DataFrame) -> np.ndarray:
        codes, H, cand = _encode(frame, self.index)
        lengths = np.where(cand >= 0, np.diff(H.indptr)[codes], 0)
        out = np.zeros(len(frame))
        step = max(1, BLOCK // max(1, int(lengths.max(initial=0))))
        for a in range(0, len(frame), step):  # one (row, history item) pair per value, BLOCK at most
            ln = lengths[a : a + step]
            if not ln.any():
                continue
            rows = np.repeat(np.arange(len(ln)), ln)
            offsets = np.arange(ln.sum()) - np.repeat(np.cumsum(ln) - ln, ln)
            hist = H.indices[np.repeat(H.indptr[codes[a : a + step]], ln) + offsets]
            values = np.asarray(self.matrix[hist, np.repeat(cand[a : a + step], ln)]).ravel()
            out[a : a + step] = np.bincount(rows, weights=values, minlength=len(ln))
        return out


@dataclass
class VectorScorer:
    """score = cosine(sum of the history items' unit vectors, candidate unit vector) (TF-IDF, zero-shot)."""

    index: pd.Index
    vectors: np.ndarray | sp.csr_matrix   # one L2-normalised row per item (zero rows score 0)
    prepare: Callable[[np.ndarray], None] | None = None  # fills the rows a frame needs (lazy vectors)

    def __call__(self, frame: pd.DataFrame) -> np.ndarray:
        codes, H, cand = _encode(frame, self.index)
        if self.prepare is not None:
            self.prepare(np.union1d(H.indices, cand[cand >= 0]))
        out = np.zeros(len(frame))
        known = np.flatnonzero((cand >= 0) & (np.diff(H.indptr)[codes] > 0))
        order = known[np.argsort(codes[known], kind="stable")]
        sorted_codes = codes[order]
        step = max(1, BLOCK // max(1, len(np.unique(cand[known]))))
        for start in range(0, H.shape[0], step):  # blocks of unique histories x their candidates
            rows = order[np.searchsorted(sorted_codes, start) : np.searchsorted(sorted_codes, start + step)]
            if not len(rows):
                continue
            ucols, inverse = np.unique(cand[rows], return_inverse=True)
            profiles = normalize(H[start : start + step] @ self.vectors)  # mean direction = sum direction
            block = profiles @ self.vectors[ucols].T
            block = block.toarray() if sp.issparse(block) else np.asarray(block)
            out[rows] = block[codes[rows] - start, inverse.ravel()]
        return out


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


def tfidf_scorer(train: Dataset, items: pd.DataFrame) -> Scorer:
    """TF-IDF (sublinear tf) of title + text + category + subcategory; user = mean of history vectors.

    Content only: the vocabulary and idf come from the text of all `items` (known at publish time);
    `train` is accepted for a uniform signature and not used.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer

    del train
    items = items.drop_duplicates("item_id", keep="last")
    text = items["title"].fillna("").astype(str)
    for column in ("text", "category", "subcategory"):
        text = text + " " + items[column].fillna("").astype(str)
    vectors = TfidfVectorizer(sublinear_tf=True, dtype=np.float64).fit_transform(text).tocsr()
    return VectorScorer(pd.Index(items["item_id"]), vectors)


class _ZeroShotVectors:
    """The zero-shot vectors of a catalogue's items (the backbone as it is, `llmrec.models.text_encoder`), filled
    row by row when first needed; an item text is encoded once, however many items share it."""

    def __init__(self, items: pd.DataFrame, backbone: str | Path, batch_size: int, device: str, progress: bool) -> None:
        from llmrec.models.backbone import resolve_backbone
        from llmrec.models.text import TextConfig, item_texts
        from llmrec.models.text_encoder import FrozenTextEncoder

        texts = item_texts(items, TextConfig())
        self.ids, self.texts = pd.Index(list(texts)), list(texts.values())
        self.encoder = FrozenTextEncoder(resolve_backbone(str(backbone)), device=device)
        self.vectors = np.zeros((len(self.texts), self.encoder.dim))
        self.done = np.zeros(len(self.texts), dtype=bool)
        self.batch_size, self.progress = batch_size, progress

    def __call__(self, rows: np.ndarray) -> None:
        todo = np.unique(rows[~self.done[rows]])
        if len(todo):
            self.vectors[todo] = self.encoder.encode([self.texts[i] for i in todo], self.batch_size, self.progress).double().numpy()
            self.done[todo] = True


def zero_shot_scorer(
    items: pd.DataFrame, backbone: str | Path, batch_size: int = 64, device: str = "cpu", progress: bool = False
) -> Scorer:
    """The pretrained backbone as is: item = mean-pooled text embedding, user = mean of history items, dot product."""
    lazy = _ZeroShotVectors(items, backbone, batch_size, device, progress)
    return VectorScorer(lazy.ids, lazy.vectors, prepare=lazy)


def item_embeddings(
    items: pd.DataFrame, backbone: str | Path, batch_size: int = 64, device: str = "cpu", progress: bool = False
) -> tuple[pd.Index, np.ndarray]:
    """The zero-shot item vectors (mean-pooled, L2-normalised backbone embeddings) of `items`: ids, one row each."""
    lazy = _ZeroShotVectors(items, backbone, batch_size, device, progress)
    lazy(np.arange(len(lazy.ids)))
    return lazy.ids, lazy.vectors


ITEMKNN_NEIGHBOURS, ITEMKNN_SHRINK = 100, 10.0  # defaults, used as they are when the validation slice is too small
EASE_L2, EASE_MAX_ITEMS = 500.0, 20_000


def itemknn_scorer(train: Dataset, neighbours: int = ITEMKNN_NEIGHBOURS, shrink: float = ITEMKNN_SHRINK) -> Scorer:
    """Item-based CF (`llmrec.models.collaborative.itemknn_matrix`): score(c) = sum over history items h among
    c's `neighbours` most similar items of sim(h, c), the shrunk cosine of their consumers."""
    X, index = consumption_matrix(train)
    return ItemItemScorer(index, itemknn_matrix(X, neighbours, shrink))


def ease_scorer(train: Dataset, l2: float = EASE_L2, max_items: int = EASE_MAX_ITEMS) -> Scorer:
    """EASE (Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", WWW 2019): score(c) = sum_h B[h, c].

    Only the `max_items` most consumed items are modelled (others score 0): the Gram matrix, its
    inverse and B are dense float64, 8 n^2 bytes each (3.2 GB at n = 20,000; ~2x that at peak, as
    the inverse is formed in place), and the inversion takes O(n^3) time.
    """
    X, index = consumption_matrix(train)
    top = most_consumed(X, max_items)
    return ItemItemScorer(index[top], ease_matrix(X[:, top], l2))


def tuned_itemknn(train: Dataset, part: ValidationSlice | None = None) -> Baseline:
    """ItemKNN with its number of neighbours chosen on the validation slice, refitted on all of `train`."""
    choice = choose_itemknn_neighbours(part or validation_slice(train), ITEMKNN_NEIGHBOURS, ITEMKNN_SHRINK)
    return Baseline(itemknn_scorer(train, int(choice.value)), choice.describe("neighbours") + f", shrink {ITEMKNN_SHRINK:g}")


def tuned_ease(train: Dataset, part: ValidationSlice | None = None, max_items: int = EASE_MAX_ITEMS) -> Baseline:
    """EASE with its l2 chosen on the validation slice, refitted on all of `train`."""
    choice = choose_ease_l2(part or validation_slice(train), EASE_L2, max_items)
    return Baseline(ease_scorer(train, choice.value, max_items), choice.describe("l2"))


def sasrec_scorer(train: Dataset, items: pd.DataFrame, params: object | None = None, seed: int = 0,
                  device: str = "cpu", progress: bool = False, validation_users: int | str | None = AUTO_VALIDATION) -> Baseline:
    """SASRec (Kang & McAuley 2018) trained with full-softmax cross-entropy, which is what makes it strong
    (Klenitskiy & Vasilev 2023): item-id embeddings only, a causal transformer over the history. The hybrid
    recommender with its text part switched off, trained here on the training slice (`eval.sasrec`) until its
    nDCG on the validation slice stops improving, keeping the best epoch's weights."""
    import tempfile

    from llmrec.config import SasrecParams
    from llmrec.training.hybrid import fit_hybrid

    p = params if params is not None else SasrecParams()
    with tempfile.TemporaryDirectory() as out:
        model, result = fit_hybrid(train, p.hybrid(), p.train(seed, device), out, progress=progress, desc="training the SASRec baseline",
                                   lr_scale=1.0, validation_users=validation_users)
    scores, known = model.scorer(items), set(model.vocab)

    def score(frame: pd.DataFrame) -> np.ndarray:  # an id model cannot score an item it never saw: last place
        return np.where(frame["item_id"].astype(str).isin(known), scores(frame), UNSCORABLE)

    setting = (f"{p.layers} blocks x {p.dim} dims, {p.heads} heads, sequence {p.sequence_length}, dropout {p.dropout:g}, "
               f"lr {p.lr:g}, batch {p.batch_size}; {result.length()}")
    return Baseline(score, setting, {"model": model, "train": result})


def fit_baselines(
    train: Dataset,
    items: pd.DataFrame,
    names: tuple[str, ...] | list[str] = NAMES,
    backbone: str | Path | None = None,
    seed: int = 0,
    batch_size: int = 64,
    device: str = "cpu",
    progress: bool = False,
    sasrec: object | None = None,
    validation_users: int | str | None = AUTO_VALIDATION,
) -> dict[str, Baseline]:
    """Fit the named baselines (see NAMES); zero_shot needs a backbone ("default" or a model folder). ItemKNN's
    neighbours, EASE's l2 and SASRec's training length are chosen on the validation slice of `train` (the last
    consumption of `validation_users` users, None = all), the slice the hybrid validates on."""
    unknown = [n for n in names if n not in NAMES]
    if unknown:
        raise ConfigError(f"unknown baseline(s) {', '.join(unknown)}", fix=f"choose from {', '.join(NAMES)}")
    if "zero_shot" in names and backbone is None:
        raise ConfigError("the zero_shot baseline needs a backbone", fix='pass backbone="default" or a model folder')
    part = validation_slice(train, validation_users) if {"itemknn", "ease"} & set(names) else None
    builders: dict[str, Callable[[], Baseline]] = {
        "random": lambda: Baseline(random_scorer(seed)),
        "popularity": lambda: Baseline(popularity_scorer(train), "clicks in the training slice"),
        "tfidf": lambda: Baseline(tfidf_scorer(train, items), "sublinear tf, title + text + category + subcategory"),
        "zero_shot": lambda: Baseline(zero_shot_scorer(items, backbone, batch_size, device, progress), f"backbone {backbone}"),  # type: ignore[arg-type]
        "itemknn": lambda: tuned_itemknn(train, part),
        "ease": lambda: tuned_ease(train, part),
        "sasrec": lambda: sasrec_scorer(train, items, sasrec, seed, device, progress, validation_users),
    }
    fitted = {}
    for name in names:
        fitted[name] = builders[name]()
        if fitted[name].setting:
            log.info("baseline %s: %s", name, fitted[name].setting)
    return fitted
