"""`llmrec serve`: an HTTP ranking service that follows a registry alias (the champion by default).

A background thread polls the MLflow registry; when the alias points at another version it downloads
and loads that version next to the one in use, then swaps a single reference. Requests keep the model
object they grabbed, so none fails during a swap. Scoring renders texts with the shared
`llmrec.models.text` functions through `ranker_scorer`, exactly as training and evaluation did.

Heavy libraries (torch, transformers, mlflow) are imported only when a model is loaded.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from llmrec import __version__, tracking
from llmrec.errors import ModelError

log = logging.getLogger(__name__)

MAX_HISTORY = 50
MAX_CANDIDATES = 300
MAX_LISTED_UNKNOWN = 20

# ---------------------------------------------------------------------------------------------------------------------
# API schema
# ---------------------------------------------------------------------------------------------------------------------

ItemId = Annotated[
    str,
    StringConstraints(min_length=1, max_length=128, pattern=r"^\S+$"),
    Field(description="An item id of the model's catalogue (no whitespace)", examples=["N1234"]),
]


class RecommendRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"history": ["N101", "N202"], "candidates": ["N7", "N8", "N9"], "k": 2}]},
    )

    history: list[ItemId] = Field(
        default_factory=list,
        max_length=MAX_HISTORY,
        description=f"Items the user read, oldest first (at most {MAX_HISTORY}); the latest ones form the user text",
    )
    candidates: list[ItemId] | None = Field(
        None,
        min_length=1,
        max_length=MAX_CANDIDATES,
        description=f"Items to rank (1 to {MAX_CANDIDATES}); duplicates are dropped, keeping the first. "
        "Leave it out to rank the whole catalogue minus the history (two-tower models only)",
    )
    k: int = Field(10, ge=1, le=MAX_CANDIDATES, description="How many of the best candidates to return")


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


class Health(BaseModel):
    status: str = Field(description="'ok' when a model is loaded and serving")
    model_version: str | None = Field(None, description="Version being served")
    alias: str
    last_error: str | None = Field(None, description="Why the latest registry check or load failed, if it did")


class DataLineage(BaseModel):
    dvc_md5: str | None = Field(None, description="DVC hash of the training data (tag data.dvc_md5)")
    git_revision: str | None = Field(None, description="git revision of the data snapshot (tag data.git_revision)")


class ModelInfo(BaseModel):
    name: str
    alias: str
    version: str
    run_id: str = Field(description="MLflow run that produced the version")
    data: DataLineage
    trained_at: str | None = Field(None, description="End of the training data (tag data.train_end)")
    loaded_at: str = Field(description="When this service loaded the version (UTC, ISO 8601)")
    metrics: dict[str, float] = Field(default_factory=dict, description="Metrics logged with the version's run")


class Unavailable(BaseModel):
    detail: str


# ---------------------------------------------------------------------------------------------------------------------
# Loaded models and the holder that follows the alias
# ---------------------------------------------------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(eq=False)
class LoadedModel:
    """One registry version in memory: its ranker, its catalogue and where it came from. Never mutated."""

    name: str
    version: str
    alias: str
    run_id: str
    tags: dict[str, str]
    metrics: dict[str, float]
    catalogue: frozenset[str]
    scorer: Callable[[Any], Any]  # ranker_scorer(...): frame with history / item_id -> scores
    folder: Path | None = None
    scores_catalogue: bool = False  # two-tower: cheap enough to rank the whole catalogue per request
    loaded_at: str = field(default_factory=_now)
    # fast tokenizers refuse concurrent use ("Already borrowed"): one scoring call at a time per model
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def score(self, history: list[str], candidates: list[str]):
        """Scores of candidates for one user, in candidate order."""
        import pandas as pd

        frame = pd.DataFrame({"history": [" ".join(history)] * len(candidates), "item_id": candidates})
        with self.lock:
            return self.scorer(frame)

    def info(self) -> ModelInfo:
        return ModelInfo(
            name=self.name,
            alias=self.alias,
            version=self.version,
            run_id=self.run_id,
            data=DataLineage(dvc_md5=self.tags.get("data.dvc_md5"), git_revision=self.tags.get("data.git_revision")),
            trained_at=self.tags.get("data.train_end"),
            loaded_at=self.loaded_at,
            metrics=self.metrics,
        )


def items_path(model_dir: Path) -> Path:
    """The catalogue (pyfunc artifact "items") of a model downloaded by `tracking.download_model_dir`."""
    import yaml

    for root in (model_dir, *model_dir.parents):
        mlmodel = root / "MLmodel"
        if mlmodel.is_file():
            flavor = (yaml.safe_load(mlmodel.read_text()) or {}).get("flavors", {}).get("python_function", {})
            relative = flavor.get("artifacts", {}).get("items", {}).get("path")
            if relative and (root / relative).is_file():
                return root / relative
            break
    raise ModelError("the model version holds no items (catalogue) artifact", where=str(model_dir))


class ModelHolder:
    """Holds the served model and follows a registry alias.

    `current` is the single reference requests read; it is only ever replaced, in one assignment, by a
    fully loaded model. `refresh()` checks the alias once (the poll thread calls it; tests may too).
    """

    def __init__(
        self,
        model_name: str,
        alias: str = tracking.CHAMPION,
        root: str | Path = ".",
        device: str = "auto",
        batch_size: int = 64,
        cache_dir: str | Path | None = None,
    ) -> None:
        self.model_name = model_name
        self.alias = alias
        self.root = root
        self.device = device
        self.batch_size = batch_size
        self.current: LoadedModel | None = None
        self._previous: LoadedModel | None = None  # kept for an instant rollback
        self.last_error: str | None = None
        self.last_checked: str | None = None
        self._own_cache = cache_dir is None
        self.cache_dir = Path(cache_dir) if cache_dir else Path(tempfile.mkdtemp(prefix="llmrec-serve-"))
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._missing_logged = False

    # -- status ----------------------------------------------------------------------------------------------------
    def unavailable_reason(self) -> str:
        if self.last_error:
            return self.last_error
        if self.last_checked is None:
            return f"loading: the registry has not been checked yet for {self.model_name}@{self.alias}"
        return f"no model version of {self.model_name!r} has the alias {self.alias!r} yet"

    # -- following the alias ---------------------------------------------------------------------------------------
    def refresh(self) -> bool:
        """Check the alias once; load and swap in a new version when it moved. True when the model changed.

        Never raises: a failing lookup or load keeps the model in use and is logged.
        """
        with self._lock:
            try:
                info = tracking.get_version(self.model_name, alias=self.alias, root=self.root)
            except Exception as exc:  # the registry may be briefly unreachable: keep serving
                self.last_error = f"registry lookup of {self.model_name}@{self.alias} failed: {exc}"
                log.error("%s", self.last_error)
                return False
            self.last_checked = _now()
            current = self.current
            if info is None:
                if current is not None and not self._missing_logged:
                    log.warning(
                        "alias %s@%s no longer exists; still serving version %s", self.model_name, self.alias, current.version
                    )
                    self._missing_logged = True
                self.last_error = None
                return False
            self._missing_logged = False
            if current is not None and current.version == info.version:
                self.last_error = None
                return False
            previous = self._previous
            try:
                if previous is not None and previous.version == info.version:
                    # a rollback: that version is still in memory (registry versions are immutable)
                    new = replace(previous, loaded_at=_now())
                else:
                    new = self._load(info)
            except Exception as exc:
                self.last_error = f"loading {self.model_name} version {info.version} failed: {exc}"
                log.exception("%s; still serving version %s", self.last_error, current.version if current else None)
                return False
            self.current = new  # the swap: one reference assignment; requests in flight keep their object
            self._previous = current
            if previous is not None and previous.folder not in (new.folder, current.folder if current else None):
                self._discard(previous)  # at most two versions in memory: the served one and the one before
            self.last_error = None
            log.info(
                "serving %s version %s (alias %s)%s",
                self.model_name, new.version, self.alias, f", was {current.version}" if current else "",
            )
            return True

    def _load(self, info: tracking.VersionInfo) -> LoadedModel:
        """Download, load and warm up a version (the served model is untouched meanwhile)."""
        import pandas as pd

        from llmrec.models.ranker import is_pair_scorer, load_ranker, ranker_scorer

        dest = self.cache_dir / f"v{info.version}-{uuid.uuid4().hex[:8]}"
        try:
            model_dir = tracking.download_model_dir(self.model_name, info.version, dest, root=self.root)
            items = pd.read_parquet(items_path(model_dir))
            ranker = load_ranker(model_dir, device=self.device)
            loaded = LoadedModel(
                name=self.model_name,
                version=info.version,
                alias=self.alias,
                run_id=info.run_id,
                tags=dict(info.tags),
                metrics={k: float(v) for k, v in info.metrics.items()},
                catalogue=frozenset(items["item_id"].astype(str)),
                scorer=ranker_scorer(ranker, items, batch_size=self.batch_size),
                folder=dest,
                scores_catalogue=not is_pair_scorer(ranker),
            )
            if not loaded.catalogue:
                raise ModelError("the model's catalogue is empty", where=f"models:/{self.model_name}/{info.version}")
            some = next(iter(loaded.catalogue))
            loaded.score([some], [some])  # warm-up, so the first request after the swap is not slow
            return loaded
        except Exception:
            shutil.rmtree(dest, ignore_errors=True)
            raise

    def _discard(self, model: LoadedModel) -> None:
        if model.folder is not None:
            shutil.rmtree(model.folder, ignore_errors=True)

    # -- the poll thread -------------------------------------------------------------------------------------------
    def start(self, poll_seconds: float) -> None:
        """Check the alias now and then every `poll_seconds` (once only when poll_seconds <= 0), in the background."""
        if self._thread is not None:
            return
        self._stop.clear()

        def loop() -> None:
            while True:
                self.refresh()
                if poll_seconds <= 0 or self._stop.wait(poll_seconds):
                    return

        self._thread = threading.Thread(target=loop, name="llmrec-serve-poll", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self._own_cache:
            shutil.rmtree(self.cache_dir, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------------------------
# The app
# ---------------------------------------------------------------------------------------------------------------------

DESCRIPTION = """\
Ranks candidate news items for a user with the llmrec cross-encoder registered in MLflow.

The service follows a registry alias (`champion` by default): when the alias moves, the new version
is loaded in the background and swapped in without failing requests. `/model` tells which version
is serving and the data it was trained on.
"""


def _unknown(ids: list[str], catalogue: frozenset[str]) -> list[str]:
    return list(dict.fromkeys(i for i in ids if i not in catalogue))


def create_app(
    model_name: str,
    alias: str = tracking.CHAMPION,
    poll_seconds: float = 10.0,
    root: str | Path = ".",
    *,
    device: str = "auto",
    batch_size: int = 64,
) -> FastAPI:
    """The FastAPI app serving `model_name@alias` from the registry at `root` (or MLFLOW_TRACKING_URI).

    The poll thread starts with the app (lifespan); `app.state.holder.refresh()` checks the alias on demand.
    """
    holder = ModelHolder(model_name, alias, root=root, device=device, batch_size=batch_size)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        holder.start(poll_seconds)
        try:
            yield
        finally:
            holder.stop()

    app = FastAPI(title="llmrec", description=DESCRIPTION, version=__version__, lifespan=lifespan)
    app.state.holder = holder
    unavailable = {503: {"model": Unavailable, "description": "No model is loaded yet"}}

    def serving() -> LoadedModel:
        model = holder.current
        if model is None:
            raise HTTPException(status_code=503, detail=holder.unavailable_reason())
        return model

    @app.post(
        "/recommend",
        response_model=RecommendResponse,
        summary="Rank candidates for a user",
        description=(
            "Scores every candidate for the user's history and returns the best `k`, best first. "
            "Invalid requests get 422: schema errors in FastAPI's usual form, and item ids unknown to the "
            "served model's catalogue as `{\"detail\": {\"message\": ..., \"unknown\": {\"history\": [...], "
            f"\"candidates\": [...]}}}}` (at most {MAX_LISTED_UNKNOWN} ids listed per field)."
        ),
        responses=unavailable,
    )
    def recommend(request: RecommendRequest) -> RecommendResponse:
        import numpy as np

        model = serving()  # this request uses this model to the end, whatever swaps meanwhile
        if request.candidates is None:
            if not model.scores_catalogue:
                raise HTTPException(
                    status_code=422,
                    detail={
                        "message": f"{model.name} version {model.version} is a pair scorer (cross-encoder): it ranks "
                        "candidate lists, not the whole catalogue; send `candidates`, or serve a two-tower model",
                    },
                )
            seen = set(request.history)
            candidates = sorted(i for i in model.catalogue if i not in seen)
        else:
            candidates = list(dict.fromkeys(request.candidates))
        found = {"history": _unknown(request.history, model.catalogue), "candidates": _unknown(candidates, model.catalogue)}
        unknown = {where: ids for where, ids in found.items() if ids}
        if unknown:
            parts = []
            for where, ids in unknown.items():
                shown = ", ".join(ids[:MAX_LISTED_UNKNOWN])
                more = f" (and {len(ids) - MAX_LISTED_UNKNOWN} more)" if len(ids) > MAX_LISTED_UNKNOWN else ""
                parts.append(f"{where}: {shown}{more}")
            raise HTTPException(
                status_code=422,
                detail={
                    "message": f"item ids unknown to the catalogue of {model.name} version {model.version}: "
                    + "; ".join(parts),
                    "unknown": {where: ids[:MAX_LISTED_UNKNOWN] for where, ids in unknown.items()},
                },
            )
        scores = np.asarray(model.score(request.history, candidates), dtype=float)
        scores = np.where(np.isfinite(scores), scores, -1e30)  # JSON has no NaN / inf
        order = np.argsort(-scores, kind="stable")[: request.k]
        return RecommendResponse(
            items=[
                RankedItem(item_id=candidates[i], score=float(scores[i]), rank=rank) for rank, i in enumerate(order, start=1)
            ],
            model=ModelRef(name=model.name, version=model.version, alias=model.alias),
        )

    @app.get("/health", response_model=Health, summary="Liveness and readiness", responses=unavailable)
    def health():
        model = holder.current
        if model is None:
            from fastapi.responses import JSONResponse

            body = Health(status="unavailable", alias=holder.alias, last_error=holder.unavailable_reason())
            return JSONResponse(status_code=503, content={**body.model_dump(), "detail": holder.unavailable_reason()})
        return Health(status="ok", model_version=model.version, alias=model.alias, last_error=holder.last_error)

    @app.get("/model", response_model=ModelInfo, summary="The model version being served", responses=unavailable)
    def model_info() -> ModelInfo:
        return serving().info()

    return app


def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    model_name: str = "llmrec",
    alias: str = tracking.CHAMPION,
    poll_seconds: float = 10.0,
    root: str | Path = ".",
) -> None:
    """Run the service with uvicorn, one worker (the model is held in this process)."""
    import uvicorn

    uvicorn.run(create_app(model_name, alias, poll_seconds, root), host=host, port=port, workers=1, log_level="info")
