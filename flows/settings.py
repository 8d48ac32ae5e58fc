"""The `retrain` form: the settings a user picks in the Prefect UI, turned into `llmrec.config` overrides.

Every field has a literal default meaning "as in the params file" (0, "" or FROM_PARAMS): the Prefect UI
renders `Optional[...] = None` as a type switch ("int | None") instead of an input, so there is no None.
`to_overrides` is the one place where the form becomes `section.key=value` strings; they go through
`llmrec.config.load_params` like the CLI's `--set`, so a wrong value gets the same ConfigError.
"""

from __future__ import annotations

from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

FROM_PARAMS = "from params file"

ModelType = Literal["from params file", "two-tower", "hybrid", "cross-encoder"]
Device = Literal["from params file", "auto", "cpu", "cuda", "mps"]
Metric = Literal["from params file", "ndcg@10", "ndcg@5", "mrr", "auc"]
Baseline = Literal["popularity", "random", "tfidf", "zero_shot", "itemknn", "ease", "sasrec"]


class RetrainSettings(BaseModel):
    """What to change for this run. Untouched fields (0, empty, "from params file") keep the params file's
    value; the overrides list wins over everything here."""

    model_config = ConfigDict(extra="forbid", title="Retrain settings")

    dataset_path: str = Field(
        "", title="Dataset path",
        description="Source folder (MIND, MovieLens or CSV/Parquet tables) or a folder of batch folders, "
        "relative to the project (data.path; empty = from the params file)",
    )
    model_type: ModelType = Field(
        FROM_PARAMS, title="Model type",
        description="two-tower (text towers, scores a catalogue), hybrid (text + item ids, sequence user encoder) "
        "or cross-encoder (pair scorer, re-ranks lists) (model.type)",
    )
    budget: str = Field(
        "", title="Budget preset", max_length=100,
        description="A name from the params file's `budgets`, e.g. cpu-10min or gpu-1h: settings sized for that hardware; "
        "the fields below still win (budget; empty = none / from the params file)",
    )
    max_steps: int = Field(
        0, title="Max steps", ge=0, le=10_000_000, description="Optimizer steps (train.max_steps; 0 = from the params file)"
    )
    learning_rate: float = Field(
        0.0, title="Learning rate", ge=0, lt=1, description="Peak learning rate (train.lr; 0 = from the params file)"
    )
    batch_size: int = Field(
        0, title="Batch size", ge=0, le=65_536, description="Click groups per step (train.batch_size; 0 = from the params file)"
    )
    device: Device = Field(
        FROM_PARAMS, title="Device", description="auto = CUDA, then MPS, then CPU (train.device)"
    )
    promotion_metric: Metric = Field(
        FROM_PARAMS, title="Promotion metric", description="Holdout metric the promotion policy compares (promotion.metric)"
    )
    min_gain: float = Field(
        -1.0, title="Min gain", ge=-1, le=1,
        description="Margin the lower bound of the challenger - champion interval must clear to promote "
        "(promotion.min_gain, >= 0; -1 = from the params file)",
    )
    must_beat: list[Baseline] = Field(
        default=[], title="Must beat",
        description="Baselines a challenger must beat to be promoted (promotion.must_beat; none selected = from the params file)",
    )


def to_overrides(settings: RetrainSettings) -> list[str]:
    """The `section.key=value` overrides the form asks for (fields left at "from the params file" give none)."""
    chosen: dict[str, object] = {
        "data.path": settings.dataset_path.strip() or None,
        "model.type": None if settings.model_type == FROM_PARAMS else settings.model_type,
        "budget": settings.budget.strip() or None,
        "train.max_steps": settings.max_steps or None,
        "train.lr": settings.learning_rate or None,
        "train.batch_size": settings.batch_size or None,
        "train.device": None if settings.device == FROM_PARAMS else settings.device,
        "promotion.metric": None if settings.promotion_metric == FROM_PARAMS else settings.promotion_metric,
        "promotion.min_gain": None if settings.min_gain == -1 else settings.min_gain,
        "promotion.must_beat": list(settings.must_beat) or None,
    }
    return [f"{key}={_yaml(value)}" for key, value in chosen.items() if value is not None]


def _yaml(value: object) -> str:
    """One value as YAML flow text, so `apply_overrides` (yaml.safe_load) reads back exactly this value."""
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()
