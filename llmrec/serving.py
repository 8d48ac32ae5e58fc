"""`llmrec serve`: an HTTP ranking service that follows a registry alias (the champion by default).

A background thread polls the MLflow registry; when the alias points at another version it downloads
and loads that version next to the one in use (a hybrid or two-tower model also encodes its catalogue), then
swaps a single reference. Requests keep the model object they grabbed, so none fails during a swap.

A request names history items and candidates by catalogue id or sends them as raw texts. Both become
item texts through `llmrec.models.text` (ids: the catalogue rendering; raw texts: `render_item`) and
are scored by `llmrec.models.ranker.text_scorer`, so serving renders exactly as training and
evaluation did. The request schema is built from `ServeLimits`, so the published OpenAPI schema
states the limits that are enforced; every bad request gets a 4xx whose `detail.message` says why.

Heavy libraries (torch, transformers, mlflow) are imported only when a model is loaded.

Why one module this long: the holder that follows the registry alias and the FastAPI app that reads it share
the swap's invariants (a request keeps the model it grabbed); the request and response models are
`llmrec.serving_schema`.
"""

# No `from __future__ import annotations` here: FastAPI reads the endpoint annotations at run time, and
# the request models are classes built per app (from its limits), which string annotations cannot name.

import logging
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from llmrec import __version__, tracking
from llmrec.config import ServeLimits, ServeParams
from llmrec.errors import ModelError
from llmrec.models.text import TextConfig, render_item
from llmrec.serving_schema import (
    MAX_LISTED_ERRORS,
    MAX_LISTED_UNKNOWN,
    CatalogueInfo,
    DataLineage,
    ErrorBody,
    ErrorDetail,
    FieldError,
    Health,
    ModelInfo,
    ModelRef,
    RankedItem,
    RecommendResponse,
    Unavailable,
    request_model,
)

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------------------------------
# Loaded models and the holder that follows the alias
# ---------------------------------------------------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(eq=False)
class LoadedModel:
    """One registry version in memory: its scorer, its catalogue and where it came from. Never mutated."""

    name: str
    version: str
    alias: str
    run_id: str
    tags: dict[str, str]
    metrics: dict[str, float]
    texts: Mapping[str, str]  # catalogue item id -> its rendered text
    text_config: TextConfig   # how the model renders items (raw texts of requests are rendered with it)
    scorer: Callable[[Sequence[str], Sequence[str]], Any]  # ranker.text_scorer: (history texts, candidate texts)
    folder: Path | None = None
    scores_catalogue: bool = False  # two-tower, hybrid: cheap enough to rank the whole catalogue per request
    catalogue_order: tuple[str, ...] = ()  # the catalogue ids, sorted: the candidates of "rank the catalogue"
    added: int = 0  # items of a newer version's catalogue (scored by their text)
    newest_version: str | None = None  # the newest registered version when the catalogue was last extended
    loaded_at: str = field(default_factory=_now)
    # fast tokenizers refuse concurrent use ("Already borrowed"): one scoring call at a time per model
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def render(self, text: str, category: str | None, subcategory: str | None) -> str:
        """A raw item text as this model renders catalogue items."""
        return render_item(text, category, subcategory, self.text_config)

    def score(self, history: Sequence[str], candidates: Sequence[str]):
        """Scores of candidate item texts for one user given by their history item texts (oldest first)."""
        with self.lock:
            return self.scorer(history, candidates)

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
            catalogue=CatalogueInfo(items=len(self.texts), added=self.added, newest_version=self.newest_version),
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
        self._newest: tuple[str, Any] | None = None  # the newest registered version and its catalogue

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
                self._follow_newest(current)
                return False
            previous = self._previous
            try:
                if previous is not None and previous.version == info.version:
                    # a rollback: that version is still in memory (registry versions are immutable)
                    new = self._extended(replace(previous, loaded_at=_now()))
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

    # -- items added since a version was trained ---------------------------------------------------------------------
    def _newest_items(self) -> tuple[str | None, Any]:
        """The newest registered version and its catalogue (downloaded once per version), or (None, None).

        The catalogue is an extra: when it cannot be read, the served model keeps its own (a warning says why)."""
        import pandas as pd

        try:
            newest = tracking.latest_version(self.model_name, root=self.root)
            if newest is not None and (self._newest is None or self._newest[0] != newest):
                path = tracking.download_items(self.model_name, newest, self.cache_dir / f"items-v{newest}", root=self.root)
                items = pd.read_parquet(path)
                items["item_id"] = items["item_id"].astype(str)
                self._newest = (newest, items)
        except Exception as exc:
            log.warning("could not read the catalogue of the newest version of %s: %s", self.model_name, exc)
            return None, None
        return self._newest if newest is not None else (None, None)

    def _extended(self, model: LoadedModel) -> LoadedModel:
        """`model` knowing the items of the newest version's catalogue too (by their text): after a rollback, an
        older version answers for items added since it was trained instead of 422."""
        from llmrec.models.text import item_texts

        newest, items = self._newest_items()
        if newest is None or newest == model.newest_version:
            return model
        new = items[~items["item_id"].isin(model.texts)]
        if new.empty:
            return replace(model, newest_version=newest, lock=model.lock)
        texts = {**model.texts, **item_texts(new, model.text_config)}
        log.info("%s version %s: %d item(s) of version %s's catalogue added (scored by their text)",
                 model.name, model.version, len(new), newest)
        return replace(model, texts=texts, catalogue_order=tuple(sorted(texts)), added=model.added + len(new),
                       newest_version=newest, lock=model.lock)

    def _follow_newest(self, current: LoadedModel) -> None:
        """A newer version was registered while the alias stayed: the served model learns its new items."""
        extended = self._extended(current)
        if extended is not current:
            self.current = extended

    def _load(self, info: tracking.VersionInfo) -> LoadedModel:
        """Download, load and warm up a version (the served model is untouched meanwhile).

        A two-tower or hybrid model encodes its whole catalogue here, so no request pays for it after the swap.
        """
        import pandas as pd

        from llmrec.models.ranker import is_pair_scorer, load_ranker, text_scorer
        from llmrec.models.text import item_texts

        dest = self.cache_dir / f"v{info.version}-{uuid.uuid4().hex[:8]}"
        try:
            model_dir = tracking.download_model_dir(self.model_name, info.version, dest, root=self.root)
            items = pd.read_parquet(items_path(model_dir))
            items["item_id"] = items["item_id"].astype(str)
            newest, newest_items = self._newest_items()
            added = 0
            if newest_items is not None and newest != info.version:  # items added since: scored by their text
                new = newest_items[~newest_items["item_id"].isin(items["item_id"])]
                items, added = pd.concat([items, new], ignore_index=True), len(new)
            ranker = load_ranker(model_dir, device=self.device)
            texts = item_texts(items, ranker.text)
            if not texts:
                raise ModelError("the model's catalogue is empty", where=f"models:/{self.model_name}/{info.version}")
            started = time.perf_counter()
            loaded = LoadedModel(
                name=self.model_name,
                version=info.version,
                alias=self.alias,
                run_id=info.run_id,
                tags=dict(info.tags),
                metrics={k: float(v) for k, v in info.metrics.items()},
                texts=texts,
                text_config=ranker.text,
                scorer=text_scorer(ranker, items, batch_size=self.batch_size),
                folder=dest,
                scores_catalogue=not is_pair_scorer(ranker),
                catalogue_order=tuple(sorted(texts)),
                added=added,
                newest_version=newest,
            )
            some = next(iter(texts.values()))
            loaded.score([some], [some])  # warm-up, so the first request after the swap is not slow
            log.info("loaded version %s: %d catalogue items, ready in %.1fs", info.version, len(texts), time.perf_counter() - started)
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
# Request checks: body size, error bodies
# ---------------------------------------------------------------------------------------------------------------------


class BodyLimit:
    """ASGI middleware: a request body larger than `max_bytes` gets 413 before it is parsed.

    A declared Content-Length over the limit is refused at once; a body streamed without one is
    counted while it is read.
    """

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def message(self) -> str:
        return (
            f"the request body is larger than {self.max_bytes} bytes (serve.limits.max_body_bytes); "
            "send fewer candidates or shorter texts"
        )

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await JSONResponse(status_code=413, content={"detail": {"message": self.message()}})(scope, receive, send)
            return
        received = 0

        async def counted() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise HTTPException(status_code=413, detail={"message": self.message()})  # FastAPI answers it
            return message

        await self.app(scope, counted, send)


def _clip(value: Any, limit: int = 64) -> str | int:
    """A location part safe to echo: ints as they are, strings cut and free of lone surrogates."""
    if isinstance(value, int):
        return value
    text = str(value).encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _schema_errors(exc: RequestValidationError) -> ErrorDetail:
    """FastAPI's validation errors as an ErrorDetail, without echoing the (possibly huge) input."""
    errors = []
    for error in exc.errors():
        message = str(error.get("msg", ""))
        if error.get("type") == "json_invalid" and isinstance(error.get("ctx"), dict):
            message = f"{message}: {error['ctx'].get('error', '')}"
        errors.append(FieldError(loc=[_clip(p) for p in error.get("loc", ())], msg=message, type=str(error.get("type", ""))))
    parts = [f"{'.'.join(str(p) for p in e.loc[1:]) or 'body'}: {e.msg}" for e in errors[:MAX_LISTED_ERRORS]]
    more = f" (and {len(errors) - MAX_LISTED_ERRORS} more)" if len(errors) > MAX_LISTED_ERRORS else ""
    return ErrorDetail(
        message=f"invalid request ({len(errors)} problem{'s' if len(errors) != 1 else ''}): " + "; ".join(parts) + more
        + ". The request schema is at /openapi.json (and /docs)",
        errors=errors,
    )


def _unknown(ids: Sequence[str], catalogue: Mapping[str, str]) -> list[str]:
    return list(dict.fromkeys(i for i in ids if i not in catalogue))


# ---------------------------------------------------------------------------------------------------------------------
# The app
# ---------------------------------------------------------------------------------------------------------------------

DESCRIPTION = """\
Ranks candidate items for a user with the llmrec model (hybrid, two-tower or cross-encoder) registered in MLflow.

History items and candidates are catalogue item ids or raw texts (items the catalogue does not know);
raw texts are rendered exactly as catalogue items are. A hybrid or two-tower model also ranks its whole catalogue.

The service follows a registry alias (`champion` by default): when the alias moves, the new version
is loaded in the background and swapped in without failing requests. `/model` tells which version
is serving and the data it was trained on.

Limits: at most {max_candidates} candidates, {max_history} history entries, k up to {max_k},
{max_text_chars} characters per raw text and {max_body_bytes} bytes per request body. A request beyond
a limit, of the wrong shape or naming unknown ids gets 4xx with `detail.message` saying what to fix.
"""


def create_app(
    model_name: str,
    alias: str = tracking.CHAMPION,
    poll_seconds: float = 10.0,
    root: str | Path = ".",
    *,
    device: str = "auto",
    batch_size: int = 64,
    limits: ServeLimits | None = None,
) -> FastAPI:
    """The FastAPI app serving `model_name@alias` from the registry at `root` (or MLFLOW_TRACKING_URI).

    The poll thread starts with the app (lifespan); `app.state.holder.refresh()` checks the alias on demand.
    """
    limits = limits or ServeLimits()
    RecommendRequest = request_model(limits)
    holder = ModelHolder(model_name, alias, root=root, device=device, batch_size=batch_size)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        holder.start(poll_seconds)
        try:
            yield
        finally:
            holder.stop()

    app = FastAPI(
        title="llmrec", description=DESCRIPTION.format(**limits.model_dump()), version=__version__, lifespan=lifespan
    )
    app.state.holder = holder
    app.state.limits = limits
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        body = ErrorBody(detail=_schema_errors(exc))
        return JSONResponse(status_code=422, content=jsonable_encoder(body, exclude_none=True))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # every 4xx body is {"detail": {"message": ...}}; a 503 keeps {"detail": "..."}
        detail = exc.detail
        if 400 <= exc.status_code < 500 and not isinstance(detail, dict):
            detail = {"message": str(detail)}
            if exc.status_code == 400:  # FastAPI's answer to a body it cannot decode (e.g. not UTF-8)
                detail["message"] += "; send a UTF-8 JSON object as the schema at /openapi.json describes"
        return JSONResponse(status_code=exc.status_code, content={"detail": detail}, headers=getattr(exc, "headers", None))

    unavailable = {503: {"model": Unavailable, "description": "No model is loaded yet"}}
    errors = {
        400: {"model": ErrorBody, "description": "The body cannot be read: not UTF-8, or not parseable"},
        413: {"model": ErrorBody, "description": f"The body is larger than {limits.max_body_bytes} bytes"},
        422: {
            "model": ErrorBody,
            "description": "The request breaks the schema or a limit (`detail.errors` lists each problem), names item "
            "ids the served catalogue does not know (`detail.unknown`), or asks a cross-encoder to rank the catalogue",
        },
    }

    def serving() -> LoadedModel:
        model = holder.current
        if model is None:
            raise HTTPException(status_code=503, detail=holder.unavailable_reason())
        return model

    def refuse(message: str, **extra: Any) -> HTTPException:
        return HTTPException(status_code=422, detail={"message": message, **extra})

    @app.post(
        "/recommend",
        response_model=RecommendResponse,
        summary="Rank candidates for a user",
        description=(
            "Scores every candidate for the user's history and returns the best `k`, best first, with the model "
            "version that answered. History entries and candidates are catalogue item ids or raw-text objects."
        ),
        responses={**errors, **unavailable},
    )
    def recommend(request: RecommendRequest) -> RecommendResponse:
        import numpy as np

        model = serving()  # this request uses this model to the end, whatever swaps meanwhile
        history_ids = [e for e in request.history if isinstance(e, str)]
        if request.candidates is None:
            if not model.scores_catalogue:
                raise refuse(
                    f"{model.name} version {model.version} is a pair scorer (cross-encoder): it ranks candidate "
                    "lists, not the whole catalogue; send `candidates`, or serve a hybrid or two-tower model"
                )
            seen = set(history_ids)
            entries: list[Any] = [i for i in model.catalogue_order if i not in seen]
        else:
            first: dict[str, Any] = {}
            for entry in request.candidates:  # duplicate ids: the first one counts
                first.setdefault(entry if isinstance(entry, str) else entry.item_id, entry)
            entries = list(first.values())
        candidate_ids = [e if isinstance(e, str) else e.item_id for e in entries]
        found = {
            "history": _unknown(history_ids, model.texts),
            "candidates": _unknown([e for e in entries if isinstance(e, str)], model.texts),
        }
        unknown = {where: ids for where, ids in found.items() if ids}
        if unknown:
            parts = []
            for where, ids in unknown.items():
                shown = ", ".join(ids[:MAX_LISTED_UNKNOWN])
                more = f" (and {len(ids) - MAX_LISTED_UNKNOWN} more)" if len(ids) > MAX_LISTED_UNKNOWN else ""
                parts.append(f"{where}: {shown}{more}")
            raise refuse(
                f"item ids unknown to the catalogue of {model.name} version {model.version}: " + "; ".join(parts)
                + ". Send such items as raw texts instead ({\"text\": ...} in history, {\"item_id\": ..., \"text\": ...} "
                "in candidates)",
                unknown={where: ids[:MAX_LISTED_UNKNOWN] for where, ids in unknown.items()},
            )

        def text_of(entry: Any) -> str:
            if isinstance(entry, str):
                return model.texts[entry]
            return model.render(entry.text, entry.category, entry.subcategory)

        scores = np.asarray(model.score([text_of(e) for e in request.history], [text_of(e) for e in entries]), dtype=float)
        scores = np.where(np.isfinite(scores), scores, -1e30)  # JSON has no NaN / inf
        order = np.argsort(-scores, kind="stable")[: request.k]
        return RecommendResponse(
            items=[
                RankedItem(item_id=candidate_ids[i], score=float(scores[i]), rank=rank) for rank, i in enumerate(order, start=1)
            ],
            model=ModelRef(name=model.name, version=model.version, alias=model.alias),
        )

    @app.get("/health", response_model=Health, summary="Liveness and readiness", responses=unavailable)
    def health():
        model = holder.current
        if model is None:
            body = Health(status="unavailable", alias=holder.alias, last_error=holder.unavailable_reason())
            return JSONResponse(status_code=503, content={**body.model_dump(), "detail": holder.unavailable_reason()})
        return Health(status="ok", model_version=model.version, alias=model.alias, last_error=holder.last_error)

    @app.get("/model", response_model=ModelInfo, summary="The model version being served", responses=unavailable)
    def model_info() -> ModelInfo:
        return serving().info()

    return app


def serve(model_name: str = "llmrec", settings: ServeParams | None = None, root: str | Path = ".") -> None:
    """Run the service with uvicorn, one worker (the model is held in this process)."""
    import uvicorn

    settings = settings or ServeParams()
    app = create_app(
        model_name, settings.alias, settings.poll_seconds, root,
        device=settings.device, batch_size=settings.batch_size, limits=settings.limits,
    )
    uvicorn.run(app, host=settings.host, port=settings.port, workers=1, log_level="info")
