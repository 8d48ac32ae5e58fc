"""The REST API's request and response models (`llmrec serve`), from which FastAPI publishes the OpenAPI schema.

The /recommend request model is built per app from `ServeLimits`, so the published schema states the limits the
service enforces. Item ids and raw texts are checked here; what the catalogue knows is checked by the service.
"""

# No `from __future__ import annotations` here: the request model is a class built inside a function (from its
# limits), whose annotations name local types that string annotations could not resolve.

from typing import Annotated, Any, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StrictInt,
    StrictStr,
    StringConstraints,
    Tag,
)

from llmrec.config import ServeLimits

MAX_LISTED_UNKNOWN = 20  # unknown ids listed per field in a 422
MAX_LISTED_ERRORS = 10   # schema errors spelled out in a 422 message
MAX_ID_CHARS = 128
MAX_LABEL_CHARS = 100    # category / subcategory of a raw item

# The schema's patterns are checked by pydantic's regex engine; these checks add Python's (wider) notion of
# whitespace (e.g. \x1c-\x1f), so a value counts as blank or spaced exactly as Python-based clients think.
def _no_whitespace(value: str) -> str:
    if any(c.isspace() for c in value):
        raise ValueError("an item id must not contain whitespace")
    return value


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("the text is only whitespace")
    return value


ItemId = Annotated[
    StrictStr,
    StringConstraints(min_length=1, max_length=MAX_ID_CHARS, pattern=r"^\S+$"),
    AfterValidator(_no_whitespace),
    Field(description="An item id of the model's catalogue (no whitespace)", examples=["N1234"]),
]
Label = Annotated[StrictStr, StringConstraints(max_length=MAX_LABEL_CHARS)]


def _entry_kind(value: Any) -> str:
    """Which member of a history / candidate entry a JSON value is meant to be: an object is a raw text."""
    return "text" if isinstance(value, (dict, BaseModel)) else "item_id"


def request_model(limits: ServeLimits) -> type[BaseModel]:
    """The /recommend request model under `limits` (built per app, so the OpenAPI schema states the limits)."""
    RawText = Annotated[
        StrictStr,
        StringConstraints(min_length=1, max_length=limits.max_text_chars, pattern=r"\S"),
        AfterValidator(_not_blank),
        Field(
            description=f"The item's text as the catalogue's `title` column would hold it (a headline), "
            f"1 to {limits.max_text_chars} characters, not only whitespace",
            examples=["Storm closes schools across the coast"],
        ),
    ]

    class HistoryText(BaseModel):
        """An item the catalogue does not know, given by its text."""

        model_config = ConfigDict(extra="forbid")

        text: RawText
        category: Label | None = Field(
            None, description="Its category; when the model was trained with categories the item is rendered "
            "'category / subcategory: text', as catalogue items are (without one: the text alone)",
            examples=["news"],
        )
        subcategory: Label | None = Field(None, description="Its subcategory (used with `category`)", examples=["weather"])

    class CandidateText(HistoryText):
        """A candidate given by its text; `item_id` names it in the answer (it need not be in the catalogue)."""

        item_id: ItemId

    history_entry = Annotated[
        Union[Annotated[ItemId, Tag("item_id")], Annotated[HistoryText, Tag("text")]], Discriminator(_entry_kind)
    ]
    candidate_entry = Annotated[
        Union[Annotated[ItemId, Tag("item_id")], Annotated[CandidateText, Tag("text")]], Discriminator(_entry_kind)
    ]

    class RecommendRequest(BaseModel):
        model_config = ConfigDict(
            extra="forbid",
            json_schema_extra={
                "examples": [
                    {"history": ["N101", "N202"], "candidates": ["N7", "N8", "N9"], "k": 2},
                    {
                        "history": ["N101", {"text": "Storm closes schools across the coast", "category": "news"}],
                        "candidates": ["N7", {"item_id": "fresh-1", "text": "Markets rally after rate cut"}],
                        "k": 2,
                    },
                ]
            },
        )

        history: list[history_entry] = Field(
            default_factory=list,
            max_length=limits.max_history,
            description=f"What the user read, oldest first (at most {limits.max_history} entries; empty = a new "
            "user): catalogue item ids, or `{\"text\": ...}` objects for items the catalogue does not know. "
            "The most recent ones make the user (text or vector), as in training",
        )
        candidates: list[candidate_entry] | None = Field(
            None,
            min_length=1,
            max_length=limits.max_candidates,
            description=f"Items to rank (1 to {limits.max_candidates}): catalogue item ids, or "
            "`{\"item_id\": ..., \"text\": ...}` objects (scored by their text, even when the id is in the catalogue). "
            "Duplicate ids are dropped, keeping the first. Leave it out to rank the whole catalogue minus the "
            "history ids (two-tower and hybrid models; a cross-encoder needs candidates)",
        )
        k: StrictInt = Field(
            min(10, limits.max_k), ge=1, le=limits.max_k, description=f"How many of the best candidates to return (1 to {limits.max_k})"
        )

    return RecommendRequest


class RankedItem(BaseModel):
    item_id: str = Field(description="A candidate item id")
    score: float = Field(description="Relevance score of the model (higher is better; not a probability)")
    rank: int = Field(description="1 for the best candidate")


class ModelRef(BaseModel):
    name: str = Field(description="Registered model name")
    version: str = Field(description="Registered model version that scored the request")
    alias: str = Field(description="Registry alias the service follows")


class RecommendResponse(BaseModel):
    items: list[RankedItem] = Field(description="The top-k candidates, best first")
    model: ModelRef


class FieldError(BaseModel):
    loc: list[str | int] = Field(description="Where in the request, e.g. ['body', 'candidates', 3]")
    msg: str
    type: str = Field(description="pydantic's error type, e.g. too_long, string_type")


class ErrorDetail(BaseModel):
    message: str = Field(description="What is wrong with the request and how to fix it")
    errors: list[FieldError] | None = Field(None, description="Schema violations, one per problem")
    unknown: dict[str, list[str]] | None = Field(
        None, description=f"Item ids unknown to the served catalogue, per field (`history`, `candidates`; at most {MAX_LISTED_UNKNOWN} each)"
    )


class ErrorBody(BaseModel):
    detail: ErrorDetail


class Health(BaseModel):
    status: str = Field(description="'ok' when a model is loaded and serving")
    model_version: str | None = Field(None, description="Version being served")
    alias: str
    last_error: str | None = Field(None, description="Why the latest registry check or load failed, if it did")


class DataLineage(BaseModel):
    dvc_md5: str | None = Field(None, description="DVC hash of the training data (tag data.dvc_md5)")
    git_revision: str | None = Field(None, description="git revision of the data snapshot (tag data.git_revision)")


class CatalogueInfo(BaseModel):
    items: int = Field(description="Items the service knows (ids it accepts)")
    added: int = Field(0, description="Of those, items of a newer version's catalogue, scored by their text")
    newest_version: str | None = Field(None, description="The newest registered version, whose catalogue was added")


class ModelInfo(BaseModel):
    name: str
    alias: str
    version: str
    run_id: str = Field(description="MLflow run that produced the version")
    data: DataLineage
    trained_at: str | None = Field(None, description="End of the training data (tag data.train_end)")
    loaded_at: str = Field(description="When this service loaded the version (UTC, ISO 8601)")
    metrics: dict[str, float] = Field(default_factory=dict, description="Metrics logged with the version's run")
    catalogue: CatalogueInfo | None = None


class Unavailable(BaseModel):
    detail: str
