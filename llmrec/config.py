"""Typed parameters: params.yaml is loaded once into `Params`, shared by CLI, DVC and flows.

Why one module this long: every setting's type, default and description in one place, from which
docs/params.md is generated and params.yaml is checked.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from llmrec.errors import ConfigError

DEFAULT_PARAMS = Path("params.yaml")
MISSING = object()


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SyntheticSize(_Section):
    n_items: int = Field(3000, ge=50, description="News items across both periods")
    n_users: int = Field(2000, ge=10, description="Users")
    days_per_period: int = Field(6, ge=2, description="Days of logs in each period")
    impressions_per_day: int = Field(800, ge=10, description="Impressions logged per day")


class SyntheticParams(_Section):
    preset: str = Field("small", description="Name of a preset in `presets`")
    seed: int = 2026
    collaborative: float = Field(
        0.8, ge=0, le=1, description="Share of preferences from latent factors no text shows (co-consumption); 0 = all in the text"
    )
    sequential: float = Field(
        1.0, ge=0, le=1, description="Sequence signal of --format movielens (series, follow-ups, taste drift, new releases); 0 = none, as before"
    )
    out: str = "data/synthetic"
    presets: dict[str, SyntheticSize] = Field(
        default_factory=lambda: {
            "tiny": SyntheticSize(n_items=400, n_users=150, days_per_period=4, impressions_per_day=120),
            "small": SyntheticSize(),
        }
    )

    def size(self) -> SyntheticSize:
        if self.preset not in self.presets:
            raise ConfigError(
                f"unknown synthetic preset {self.preset!r}",
                where="params.yaml: synthetic.preset",
                fix=f"use one of {sorted(self.presets)}",
            )
        return self.presets[self.preset]


class TablesParams(_Section):
    """Generic CSV/Parquet source: which files, and which of their columns mean what."""

    items: str = Field("items.csv", description="Items file inside the data folder (.csv or .parquet)")
    interactions: str = Field("interactions.csv", description="Interactions file inside the data folder (.csv or .parquet)")
    item_columns: dict[str, str | None] = Field(
        default_factory=lambda: {"item_id": "item_id", "title": "title", "text": None, "category": None, "subcategory": None},
        description="canonical item column -> column in the items file (null = not in the file)",
    )
    interaction_columns: dict[str, str | None] = Field(
        default_factory=lambda: {"user_id": "user_id", "item_id": "item_id", "timestamp": "timestamp", "label": None, "impression_id": None},
        description="canonical interaction column -> column in the interactions file (null = not in the file)",
    )
    timestamp_unit: Literal["auto", "s", "ms", "iso"] = Field(
        "auto", description="auto: ISO-8601 text or epoch seconds; s / ms: epoch numbers; iso: text dates"
    )


class DataParams(_Section):
    path: str = Field("data/synthetic", description="Source folder (MIND, MovieLens or CSV/Parquet tables), or a folder of batch folders")
    format: Literal["auto", "mind", "movielens", "tables"] = Field("auto", description="Source format; auto = detect from the files")
    keep_entities: bool = Field(False, description="MIND: keep the title/abstract entity columns in the items table")
    min_rating: float = Field(0.0, ge=0, description="Rated sources: ratings below this are not positives (0 = every rating counts)")
    tables: TablesParams = Field(default_factory=TablesParams)
    split: Literal["auto", "temporal", "leave-last-out"] = Field(
        "auto", description="Holdout: temporal (last days) or each user's last event; auto picks by source"
    )
    holdout_days: int = Field(1, ge=1, description="Temporal split: the last N days are held out for evaluation")
    bad_rows: Literal["error", "quarantine"] = Field(
        "quarantine", description="A source row that breaks the contract: error = stop at the first one; quarantine = "
        "leave it out and keep it, with its line and reason, in <prepared>/quarantine.csv (up to max_bad_row_share)"
    )
    max_bad_row_share: float = Field(
        0.001, ge=0, le=1, description="With bad_rows: quarantine, the ingest fails when more than this share of the rows read is bad"
    )
    prepared: str = "outputs/prepared"
    validation: str = "outputs/validation"


class HybridExperimental(_Section):
    """Research switches of the hybrid: parts and losses the project measured and kept on (their defaults), for
    experiments and for the SASRec baseline (`text: false`). Change them to study the model, not to tune it."""

    text: bool = Field(True, description="Use the backbone's item-text vectors (false = item ids only, i.e. SASRec)")
    ids: bool = Field(True, description="Learn an embedding per item seen in training (false = text only)")
    ease: bool = Field(
        True, description="The id part adds EASE's score (Steck 2019: a closed-form item-item model of the training "
        "consumptions, fitted before training and fixed; it reads the whole history) with a learned weight; the "
        "transformers learn the rest"
    )
    ease_l2: float = Field(500.0, gt=0, description="EASE's L2 regularisation without validation (with it, chosen on the validation slice as the EASE baseline's)")
    zero_shot: bool = Field(
        True, description="Add the zero-shot text score (cosine of the backbone's item vectors as they are: the mean of the "
        "history's and the candidate's) beside the trained text part. Not trained; with validation the blend weighs it"
    )
    age: Optional[bool] = Field(
        None, description="Learn a score offset per item age (hours since the log first showed it): freshness. null (default): "
        "on for logs with impressions, whose items go stale (news); off for positive-only logs, where it costs half a "
        "training step and a catalogue's items do not go stale"
    )
    id_loss: float = Field(
        1.0, ge=0, description="Weight of a loss on the id part alone (items with an id only), which keeps it a ranker of "
        "warm items by itself (0 = off)"
    )
    text_loss: float = Field(
        1.0, ge=0, description="Weight of a second loss on the text part alone, which keeps it a ranker for cold items (0 = off)"
    )
    impression_loss: float = Field(
        0.3, ge=0, description="Logs with logged non-clicks (MIND): weight of a loss that ranks each click against its own "
        "impression's non-clicks (at most 20), the ranking an impression asks for; the next-item softmax ranks it against "
        "every item. Applies with the full softmax (catalogues up to full_softmax_max_items). 0 = off"
    )
    id_dropout: float = Field(0.3, ge=0, le=1, description="Share of items trained without their id embedding, so cold items (text only) score well")
    cold_hours: float = Field(
        24.0, ge=0, description="Train items younger than this (hours since the log first showed them) as unknown ones, "
        "as items new since training are when served (0 = off; ids then drop only at random, id_dropout)"
    )

    @model_validator(mode="after")
    def _parts(self) -> "HybridExperimental":
        if not (self.text or self.ids):
            raise ValueError("model.hybrid.experimental needs text, ids or both")
        return self


class HybridParams(_Section):
    """The hybrid recommender (`model.type: hybrid`): text + item-id item vectors, a transformer over the history."""

    dim: int = Field(128, ge=8, le=2048, description="Size of item and user vectors")
    layers: int = Field(2, ge=1, le=12, description="Transformer layers of the user (sequence) encoder")
    heads: int = Field(2, ge=1, le=32, description="Attention heads per layer (dim must divide by it)")
    sequence_length: int = Field(50, ge=2, le=1024, description="Most recent history items the user encoder reads")
    dropout: float = Field(0.2, ge=0, lt=1, description="Dropout in the user encoder")
    new_item_offset: float = Field(
        0.0, ge=-20, le=20, description="Score offset of items without an id (new since training): a freshness boost for "
        "feeds that must surface new items, saved with the model (0 = none)"
    )
    ease_max_items: int = Field(
        5000, ge=1, le=20000, description="The most consumed items EASE models (a dense n x n matrix saved "
        "with the model: 100 MB at 5,000); the others get no EASE score"
    )
    full_softmax_max_items: int = Field(
        5_000, ge=0, description="Catalogues up to this size: softmax over every item; larger: over each batch's own targets "
        "with log-Q correction (a step then costs the batch, not the catalogue)"
    )
    experimental: HybridExperimental = Field(default_factory=HybridExperimental)

    @model_validator(mode="after")
    def _shape(self) -> "HybridParams":
        if self.dim % self.heads:
            raise ValueError(f"model.hybrid.dim {self.dim} is not divisible by model.hybrid.heads {self.heads}")
        return self


class CrossEncoderParams(_Section):
    """The cross-encoder (`model.type: cross-encoder`): one transformer pass per (user text, candidate) pair."""

    max_history: int = Field(3, ge=0, description="Most recent history titles put in front of the candidate")
    group_by_length: bool = Field(True, description="Batch click groups of similar token length together (less padding)")


class TwoTowerParams(_Section):
    """The two-tower model (`model.type: two-tower`): fine-tuned text towers, scores a catalogue."""

    pooling: Literal["mean", "attention"] = Field("mean", description="How the history's item vectors make the user vector")
    max_history: int = Field(20, ge=1, le=200, description="Most recent history items pooled into the user vector")


class ModelParams(_Section):
    type: Literal["cross-encoder", "two-tower", "hybrid"] = Field(
        "two-tower",
        description="two-tower (fine-tuned text towers, scores a catalogue), hybrid (text + item ids, sequence user encoder) "
        "or cross-encoder (pair scorer, re-ranks lists)",
    )
    backbone: str = Field("default", description="'default' (bundled MiniLM) or a local HF model folder")
    max_length: int = Field(64, ge=16, le=512, description="Max tokens of one text the backbone reads (a pair's, for the cross-encoder)")
    cross_encoder: CrossEncoderParams = Field(default_factory=CrossEncoderParams)
    two_tower: TwoTowerParams = Field(default_factory=TwoTowerParams)
    hybrid: HybridParams = Field(default_factory=HybridParams)


class LoraParams(_Section):
    """LoRA adapters (peft) trained instead of the top layers, merged into the backbone at save."""

    rank: int = Field(0, ge=0, le=256, description="Adapters of this rank instead of fine-tuning layers (0 = off)")
    alpha: float = Field(16.0, gt=0, description="Scaling numerator (scale = alpha / rank)")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the adapters' input")
    targets: list[str] = Field(
        default_factory=list, description="Linear layers that get adapters, e.g. [query, value] (empty = peft's default for the backbone)"
    )


class TrainParams(_Section):
    max_steps: int = Field(120, ge=1, description="Optimizer steps")
    batch_size: int = Field(8, ge=1, description="Click groups per step")
    lr: float = Field(1e-4, gt=0, lt=1)
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    negatives_per_positive: int = Field(4, ge=1)
    trainable_layers: int = Field(2, ge=0, description="Top transformer layers fine-tuned (0 = all)")
    max_train_impressions: int = Field(
        3000, ge=0, description="Most recent impressions used by the cross-encoder and the two-tower (0 = all); the hybrid "
        "always learns from every user's whole sequence (its age offsets handle recency)"
    )
    seed: int = 13
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    out: str = "outputs/model"
    checkpoint_every: int = Field(
        0, ge=0, description="Write <out>/checkpoint/ every N steps (0 = off); removed once the model is saved"
    )
    resume: bool = Field(True, description="Continue from <out>/checkpoint/ when it was written with the same params and data")
    eval_every: int = Field(
        0, ge=0, description="Validate every N steps (0 = off): nDCG@10 on the last 10% of training impressions; hybrid: "
        "nDCG over the whole catalogue of the last consumption of the most recent users (1,000 at most, 5% of the "
        "consumptions at most), held out of training"
    )
    eval_every_epochs: float = Field(
        0.0, ge=0, description="Validate every N epochs instead (e.g. 1: once per pass over the training examples; 0 = use eval_every)"
    )
    early_stopping_patience: int = Field(
        0, ge=0, description="With eval_every: stop after N validations without improvement, keep the best weights (0 = off)"
    )
    max_minutes: float = Field(0.0, ge=0, description="Stop after this many minutes and keep the model (0 = no time limit)")
    max_epochs: float = Field(
        0.0, ge=0, description="At most this many passes over the training examples (fewer steps than max_steps on a small "
        "log, which more steps would over-fit; 0 = no cap)"
    )
    grad_accum_steps: int = Field(
        1, ge=1, le=1024, description="Micro-batches of batch_size per optimizer step (effective batch = batch_size x this x processes)"
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto: bf16 (or fp16) autocast on a CUDA GPU, fp32 on CPU/MPS"
    )
    lora: LoraParams = Field(default_factory=LoraParams)

    @property
    def validates(self) -> bool:
        """Whether training holds out a validation slice and validates on it (eval_every or eval_every_epochs)."""
        return bool(self.eval_every or self.eval_every_epochs)


class SasrecParams(_Section):
    """The SASRec baseline (item ids only, causal transformer, full-softmax cross-entropy), trained at every evaluation
    until its validation nDCG stops improving (the same validation slice as the model; never a wall-clock cap)."""

    dim: int = Field(64, ge=8, le=1024)
    layers: int = Field(2, ge=1, le=8)
    heads: int = Field(2, ge=1, le=16)
    sequence_length: int = Field(200, ge=2, le=1024, description="Most recent items of a user's sequence it reads")
    dropout: float = Field(0.2, ge=0, lt=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(1e-3, gt=0, lt=1)
    max_epochs: int = Field(200, ge=1, description="At most this many passes over the training sequences")
    patience: int = Field(20, ge=1, description="Stop after this many epochs without a better validation nDCG (keep the best)")

    def hybrid(self) -> "HybridParams":
        return HybridParams(dim=self.dim, layers=self.layers, heads=self.heads, sequence_length=self.sequence_length,
                            dropout=self.dropout, experimental=HybridExperimental(
                                id_dropout=0.0, text=False, ids=True, age=False, cold_hours=0.0, ease=False,
                                impression_loss=0.0, zero_shot=False))

    def train(self, seed: int, device: str) -> "TrainParams":
        """The training settings: validated every epoch, early stopping, no time limit."""
        return TrainParams(max_steps=10**9, max_epochs=self.max_epochs, batch_size=self.batch_size, lr=self.lr, warmup_ratio=0.0,
                           seed=seed, device=device, checkpoint_every=0, eval_every_epochs=1.0,
                           early_stopping_patience=self.patience, max_minutes=0.0)


class EvalParams(_Section):
    ks: list[int] = Field(default_factory=lambda: [5, 10])
    max_impressions: int = Field(250, ge=0, description="Holdout impressions scored (0 = all)")
    negatives: int = Field(99, ge=1, description="Sampled negatives per holdout event when the source logs no non-clicks")
    baselines: list[Literal["popularity", "random", "tfidf", "zero_shot", "itemknn", "ease", "sasrec"]] = Field(
        default_factory=lambda: ["popularity", "random", "tfidf", "zero_shot", "itemknn", "ease", "sasrec"],
        description="Baselines scored on the same holdout as the model",
    )
    sasrec: SasrecParams = Field(default_factory=SasrecParams)
    catalogue_impressions: int = Field(250, ge=0, description="Holdout impressions ranked against the whole catalogue (0 = skip)")
    sampled_on_impressions: bool = Field(
        True, description="Impression logs: also rank each holdout click against `negatives` sampled negatives (protocol sampled)"
    )
    retriever: Literal["popularity", "tfidf", "zero_shot", "itemknn", "ease", "sasrec"] = Field(
        "ease", description="Catalogue protocol: whose top-N the cross-encoder re-ranks (fitted for it when not in baselines)"
    )
    rerank_top: int = Field(20, ge=1, description="Catalogue protocol: how many retrieved items the cross-encoder re-ranks")
    confidence: float = Field(0.95, gt=0.5, lt=1, description="Level of the bootstrap intervals")
    seed: int = 13
    batch_size: int = Field(64, ge=1)
    out: str = "outputs/eval"


class DriftParams(_Section):
    share_threshold: float = Field(0.5, gt=0, le=1, description="Share of drifted features that means drift")
    decide_on: list[Literal["features", "embedding", "prediction"]] = Field(
        default_factory=lambda: ["features", "embedding"],
        description="Signals whose drift means drift (feature share, item-text embeddings, champion scores); the others are reported",
    )
    ignore: list[str] = Field(
        default_factory=lambda: ["shown_item_age_h", "shown_item_popularity"],
        description="Features computed but not monitored (recorded as skipped)",
    )
    lookback_hours: float = Field(24.0, gt=0, description="Item popularity window and item-age cap, in hours")
    unseen_margin: float = Field(0.2, ge=0, le=1, description="Unseen users/items drift above the reference's own share + this")
    embedding: bool = Field(True, description="Item-text embedding drift (backbone embeddings of new vs reference items)")
    embedding_method: Literal["mmd", "model"] = Field("mmd", description="Evidently embedding drift method")
    embedding_threshold: Optional[float] = Field(None, description="model: min ROC AUC (default 0.55); mmd: unused")
    embedding_sample: int = Field(1000, ge=20, description="Items embedded per side (seeded sample)")
    embedding_html: bool = Field(True, description="Write drift_embeddings.html (Evidently's TSNE plot, a few seconds)")
    prediction: bool = Field(True, description="Drift of the champion's scores on reference vs current candidates")
    prediction_sample: int = Field(2000, ge=10, description="Impressions per side whose champion score is compared (one seeded candidate each)")
    seed: int = 0
    out: str = "outputs/drift"


class PromotionParams(_Section):
    metric: str = Field("ndcg@10", description="Holdout metric the policy compares")
    min_gain: float = Field(0.0, ge=0, description="Required gain of challenger over champion")
    max_drop: float = Field(
        0.05, ge=0, description="Champion unhealthy when its metric fell more than this since its registration"
    )
    must_beat: list[str] = Field(
        default_factory=lambda: ["popularity", "random"],
        description="Baselines a challenger must beat to be promoted (all are reported either way)",
    )


class TrackingParams(_Section):
    experiment: str = "llmrec-synthetic"
    model_name: str = "llmrec"
    timeout_seconds: float = Field(60.0, gt=0, description="An MLflow server request that takes longer failed")
    retries: int = Field(
        3, ge=0, le=10, description="An unreachable MLflow server is retried this often (after 2, 4, 8 ... s, each with a "
        "warning naming its URL) before the stage fails"
    )


class ServeLimits(_Section):
    """Request limits of `llmrec serve`; the OpenAPI schema states them, a request beyond one gets a 4xx."""

    max_candidates: int = Field(300, ge=1, le=100_000, description="Candidates per /recommend request")
    max_history: int = Field(50, ge=0, le=10_000, description="History entries (ids or texts) per request")
    max_k: int = Field(100, ge=1, le=100_000, description="Largest k (items returned)")
    max_text_chars: int = Field(2000, ge=1, le=1_000_000, description="Characters of one raw item text")
    max_body_bytes: int = Field(1_048_576, ge=1024, description="Request body size (bytes); larger bodies get 413")


class ServeParams(_Section):
    host: str = Field("127.0.0.1", description="Address to bind (loopback by default; 0.0.0.0 exposes the service)")
    port: int = Field(8000, ge=1, le=65535)
    alias: str = Field("champion", description="Registry alias to serve and follow")
    poll_seconds: float = Field(10.0, ge=0, description="How often to check whether the alias moved (0 = once, at start)")
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    batch_size: int = Field(64, ge=1, description="Texts per transformer pass")
    limits: ServeLimits = Field(default_factory=ServeLimits)


class BatchParams(_Section):
    """`llmrec recommend --all-users`: every user's top-k from the served model, to Parquet (and a database)."""

    k: int = Field(10, ge=1, le=10_000, description="Items per user")
    chunk_users: int = Field(
        200, ge=1, description="Users scored and written together (one part file each; a killed run resumes from them)"
    )
    out: str = Field("outputs/recommendations.parquet", description="The Parquet file of the lists")
    alias: str = Field("champion", description="Registry alias of the model that recommends")
    table: str = Field(
        "recommendations",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,50}$",
        description="Database table the lists replace, when the environment variable LLMREC_BATCH_DATABASE_URL "
        "names a database (e.g. the production-like stack's PostgreSQL)",
    )


class Params(_Section):
    synthetic: SyntheticParams = Field(default_factory=SyntheticParams)
    data: DataParams = Field(default_factory=DataParams)
    model: ModelParams = Field(default_factory=ModelParams)
    train: TrainParams = Field(default_factory=TrainParams)
    eval: EvalParams = Field(default_factory=EvalParams)
    drift: DriftParams = Field(default_factory=DriftParams)
    promotion: PromotionParams = Field(default_factory=PromotionParams)
    tracking: TrackingParams = Field(default_factory=TrackingParams)
    serve: ServeParams = Field(default_factory=ServeParams)
    batch: BatchParams = Field(default_factory=BatchParams)
    budget: str | None = Field(None, description="A name from `budgets` whose settings were applied (--budget NAME)")
    budgets: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Named sets of section.key settings sized for a hardware budget (e.g. cpu-10min)"
    )

    @model_validator(mode="after")
    def _metric_is_computed(self) -> "Params":
        known = ["auc", "mrr", *(f"ndcg@{k}" for k in self.eval.ks)]
        if self.promotion.metric not in known:
            raise ValueError(f"promotion.metric {self.promotion.metric!r} is not computed; choose one of {known} (or add k to eval.ks)")
        return self


MOVED = {  # settings that moved when the params surface was regrouped by model type: old dotted name -> new
    "model.pooling": "model.two_tower.pooling",
    "model.tower_history": "model.two_tower.max_history",
    "model.max_history": "model.cross_encoder.max_history",
    "train.group_by_length": "model.cross_encoder.group_by_length",
    **{f"train.lora_{k}": f"train.lora.{k}" for k in ("rank", "alpha", "dropout", "targets")},
    **{f"model.hybrid.{k}": f"model.hybrid.experimental.{k}" for k in HybridExperimental.model_fields},
}


def _moved_settings(raw: dict[str, Any]) -> list[str]:
    """'old -> new' for every moved setting `raw` still sets."""
    found = []
    for old, new in MOVED.items():
        node: Any = raw
        for part in old.split("."):
            node = node.get(part, MISSING) if isinstance(node, dict) else MISSING
        if node is not MISSING:
            found.append(f"{old} is now {new}")
    return found


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `section.key=value` strings (values parsed as YAML) to a raw params dict."""
    raw = copy.deepcopy(raw)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} has no '='", fix="write it as section.key=value, e.g. train.lr=1e-4")
        key, value = item.split("=", 1)
        node = raw
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
        node[parts[-1]] = yaml.safe_load(value)
    return raw


def _with_budget(raw: dict[str, Any], overrides: list[str], where: str) -> dict[str, Any]:
    """raw + the chosen budget's settings + the overrides (which win over the budget)."""
    chosen = apply_overrides(raw, overrides).get("budget")
    if not chosen:
        return apply_overrides(raw, overrides)
    budgets = raw.get("budgets") or {}
    if chosen not in budgets:
        raise ConfigError(f"unknown budget {chosen!r}", where=f"{where}: budgets", fix=f"use one of {sorted(budgets) or ['(none defined)']}")
    settings = budgets[chosen] or {}
    if not isinstance(settings, dict):
        raise ConfigError(f"budget {chosen!r} is not a mapping of section.key: value", where=f"{where}: budgets.{chosen}")
    as_overrides = [f"{key}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}" for key, value in settings.items()]
    return apply_overrides(raw, [*as_overrides, *overrides, f"budget={chosen}"])


def _did_you_mean(error: Any) -> str:
    """For an unknown key (e.g. train.steps): the known keys of its section that look like it (train.max_steps)."""
    import difflib

    if error.get("type") != "extra_forbidden":
        return ""
    *section, key = [str(p) for p in error["loc"]]
    model: Any = Params
    for part in section:
        field = model.model_fields.get(part)
        model = field.annotation if field is not None else None
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return ""
    names = list(model.model_fields)
    close = difflib.get_close_matches(key, names, n=3, cutoff=0.5) or [n for n in names if key in n or n in key]
    prefix = ".".join(section) + "." if section else ""
    if close:
        return f" (did you mean {' or '.join(prefix + n for n in close)}?)"
    return f" (the keys of {prefix.rstrip('.') or 'the params file'}: {', '.join(names)})"


def load_params(path: str | Path | None = None, overrides: list[str] | None = None) -> Params:
    """Load params.yaml (or defaults when it does not exist) and apply overrides."""
    path = Path(path) if path is not None else DEFAULT_PARAMS
    raw: dict[str, Any] = {}
    if path.exists():
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"params file is not valid YAML: {exc}", where=str(path)) from exc
    raw = _with_budget(raw, overrides or [], str(path))
    moved = _moved_settings(raw)
    if moved:
        raise ConfigError(
            "settings moved (params are grouped by model type):\n  " + "\n  ".join(moved),
            where=f"{path} or --set",
            fix="rename them as shown (docs/params.md lists every setting)",
        )
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        lines = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}{_did_you_mean(e)}" for e in exc.errors()]
        raise ConfigError(
            "invalid parameters:\n  " + "\n  ".join(lines),
            where=str(path),
            fix="correct the values above in params.yaml or in your --set overrides",
        ) from exc
