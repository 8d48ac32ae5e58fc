"""Batch recommendations: the served model's top-k for every user (or a list of users), written to Parquet
and, when `LLMREC_BATCH_DATABASE_URL` names a database, to its table `batch.table`.

Teams feed emails, home pages and caches from such lists, made by a nightly job. The users (sorted ids)
are cut into fixed chunks; each chunk is scored and written to its own part file (written whole, then
renamed), so a run that was killed resumes with the chunks that are missing and never writes a user twice.
A manifest says which model, data and settings the parts belong to: a re-run with others refuses to mix
them (or starts over with `restart`). At the end the parts are joined into one Parquet file, whose rows
and metadata carry the model version and the data version. The database table is replaced in one
transaction (readers see the old lists or the new ones, never a mix); the part files stay until it is, so a
run whose database was unreachable publishes on its next start without scoring again.

A user's history is their consumptions in the prepared tables, oldest first (for logs with explicit
histories, MIND, the history of their latest impression first); the candidates are every item of the
prepared tables minus that history, so items added since the model was trained are ranked by their text.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from llmrec import pipeline
from llmrec.config import Params
from llmrec.data.contract import Dataset
from llmrec.errors import DataError, ModelError, TrackingError

log = logging.getLogger(__name__)

COLUMNS = ["user_id", "rank", "item_id", "score", "model_name", "model_version", "data_version"]
MANIFEST = "manifest.json"
DATABASE_URL_ENV = "LLMREC_BATCH_DATABASE_URL"  # a SQLAlchemy URL; kept out of params.yaml: it holds a password
MAX_HISTORY = 1000  # most recent history items handed to the model (each model reads fewer)


def current_histories(dataset: Dataset) -> dict[str, list[str]]:
    """user_id -> the items the user consumed, oldest first, as of the end of the log (each item once, at its
    latest consumption). Explicit-history logs (MIND) put the history of the user's latest impression first."""
    inter = dataset.interactions
    positives = inter.loc[inter["label"] == 1, ["user_id", "item_id", "timestamp"]].sort_values(["user_id", "timestamp"], kind="stable")
    clicked = positives.groupby("user_id", sort=False)["item_id"].agg(list)
    users = pd.Index(dataset.impressions["user_id"].unique()).union(clicked.index)
    before = pd.Series(dtype=object)
    if dataset.source.explicit_history:
        latest = dataset.impressions.sort_values("timestamp", kind="stable").drop_duplicates("user_id", keep="last")
        before = latest.set_index("user_id")["history"].fillna("").astype(str).str.split()
    out = {}
    for user in users:
        sequence = [*before.get(user, []), *clicked.get(user, [])]
        out[str(user)] = list(dict.fromkeys(reversed(sequence)))[::-1][-MAX_HISTORY:]  # once each, at its last place
    return out


def data_version(params: Params) -> str:
    """The DVC hash of the data the prepared tables came from (`llmrec version`), else 'unversioned'."""
    path = Path(params.data.prepared) / "data_version.json"
    if path.is_file():
        return str(json.loads(path.read_text()).get("dvc_md5", "unversioned"))
    log.warning("no data version for %s (run `llmrec version` to snapshot the data): the lists say 'unversioned'",
                params.data.prepared)
    return "unversioned"


def recommend_all(
    params: Params,
    users: list[str] | None = None,
    out: str | Path | None = None,
    restart: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Write the top `batch.k` items of the model under `batch.alias` for every user of the prepared tables
    (or for `users`, in their order of first mention; unknown users have an empty history) to `out`.

    Returns {"out", "table", "users", "rows", "model_version", "data_version", "chunks", "resumed_chunks", "seconds",
    "users_per_second", "chunk_seconds"}: table is the database table written ("" without a database); seconds and users/s of this run's scoring, without loading the model and
    encoding the catalogue; chunk_seconds = [(users, seconds)] per chunk scored."""
    settings = params.batch
    out = Path(out or settings.out)
    tracking = pipeline.configured_tracking(params)
    name = params.tracking.model_name
    info = tracking.get_version(name, alias=settings.alias)
    if info is None:
        raise TrackingError(f"no version of {name!r} has the alias {settings.alias!r}",
                            fix="run `llmrec retrain` (or `llmrec models promote N`) first, or set batch.alias")
    dataset = pipeline.load_prepared(params)
    histories = current_histories(dataset)
    chosen = sorted(histories) if users is None else list(dict.fromkeys(str(u) for u in users))
    if not chosen:
        raise DataError("no users to recommend for", where=params.data.prepared, fix="check the user list or the data")
    identity = {
        "model_name": name, "model_version": info.version, "data_version": data_version(params), "k": settings.k,
        "chunk_users": settings.chunk_users, "users": len(chosen),
        "users_sha": hashlib.sha256("\n".join(chosen).encode()).hexdigest()[:16],
    }
    parts = _parts_folder(out, identity, restart)
    chunks = [chosen[i : i + settings.chunk_users] for i in range(0, len(chosen), settings.chunk_users)]
    done = {i for i in range(len(chunks)) if _part(parts, i).is_file()}
    if done:
        log.info("resuming %s: %d of %d chunks were written before", out, len(done), len(chunks))
    scored, seconds, per_chunk = 0, 0.0, []
    if len(done) < len(chunks):
        score = _scorer(params, tracking, info.version, dataset, parts)
        from tqdm.auto import tqdm

        bar = tqdm(total=len(chosen), initial=sum(len(chunks[i]) for i in done), unit="user", desc="recommend",
                   disable=not progress)
        for i, chunk in enumerate(chunks):
            if i in done:
                continue
            started = time.perf_counter()
            top = score(chunk, [histories.get(u, []) for u in chunk], settings.k)
            _write_part(_part(parts, i), top.assign(**{k: identity[k] for k in ("model_name", "model_version", "data_version")}))
            per_chunk.append((len(chunk), time.perf_counter() - started))
            seconds += per_chunk[-1][1]
            scored += len(chunk)
            bar.update(len(chunk))
        bar.close()
    rows = _join(parts, len(chunks), out, identity)
    url = os.environ.get(DATABASE_URL_ENV, "").strip()
    if url:
        publish(out, url, settings.table)
    shutil.rmtree(parts)
    return {"out": str(out), "table": settings.table if url else "", "users": len(chosen), "rows": rows, "model_version": info.version,
            "data_version": identity["data_version"], "chunks": len(chunks), "resumed_chunks": len(done),
            "seconds": seconds, "users_per_second": scored / seconds if seconds else None, "chunk_seconds": per_chunk}


def _parts_folder(out: Path, identity: dict, restart: bool) -> Path:
    """The folder of this run's part files: a killed run's, when it belongs to the same model, data and settings."""
    parts = out.with_name(out.name + ".parts")
    manifest = parts / MANIFEST
    if parts.exists():
        before = json.loads(manifest.read_text()) if manifest.is_file() else None
        if restart:
            shutil.rmtree(parts)
        elif before != identity:
            raise DataError.at(
                f"an unfinished run of other settings is here ({before}), not of this one ({identity})",
                parts,
                fix="re-run with those settings to finish it, or pass --restart to start over",
            )
    parts.mkdir(parents=True, exist_ok=True)
    if not manifest.is_file():
        _atomic_text(manifest, json.dumps(identity, indent=2))
    return parts


def _part(parts: Path, i: int) -> Path:
    return parts / f"part-{i:06d}.parquet"


def _write_part(path: Path, frame: pd.DataFrame) -> None:
    """One chunk's rows, written whole or not at all (a killed write leaves only a .tmp, which is redone)."""
    tmp = path.with_suffix(".tmp")
    frame[COLUMNS].to_parquet(tmp, index=False)
    tmp.replace(path)


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _join(parts: Path, n_chunks: int, out: Path, identity: dict) -> int:
    """The parts, in chunk order, as one Parquet file (written whole, then renamed); returns its rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    rows, writer = 0, None
    try:
        for i in range(n_chunks):
            table = pq.read_table(_part(parts, i))
            if writer is None:
                meta = {**(table.schema.metadata or {}), b"llmrec": json.dumps(identity).encode()}
                writer = pq.ParquetWriter(tmp, table.schema.with_metadata(meta))
            writer.write_table(table.replace_schema_metadata(writer.schema.metadata))
            rows += table.num_rows
    finally:
        if writer is not None:
            writer.close()
    if writer is None:  # no chunk: an empty file with the columns
        pq.write_table(pa.Table.from_pandas(pd.DataFrame(columns=COLUMNS)), tmp)
    tmp.replace(out)
    return rows


def publish(out: Path, url: str, table: str) -> None:
    """Replace `table` in the database at `url` with the lists in `out`, in one transaction, indexed by user."""
    import pyarrow.parquet as pq
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    try:
        shown = make_url(url).render_as_string(hide_password=True)
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy raises several types for a malformed URL
        raise TrackingError(f"{DATABASE_URL_ENV} is not a database URL ({exc})",
                            fix="set it like postgresql+psycopg2://USER:PASSWORD@HOST:PORT/DATABASE, or unset it") from None
    loading = f"{table}__loading"
    try:
        engine = create_engine(url)
        with engine.begin() as conn:
            conn.execute(text(f'DROP TABLE IF EXISTS "{loading}"'))
            for batch in pq.ParquetFile(out).iter_batches(batch_size=20_000):
                batch.to_pandas().to_sql(loading, conn, if_exists="append", index=False, chunksize=5_000, method="multi")
            conn.execute(text(f'DROP TABLE IF EXISTS "{table}"'))
            conn.execute(text(f'ALTER TABLE "{loading}" RENAME TO "{table}"'))
            conn.execute(text(f'CREATE INDEX "{table}__user_rank" ON "{table}" (user_id, "rank")'))
        engine.dispose()
    except (SQLAlchemyError, ImportError) as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise TrackingError(
            f"could not write the lists to table {table!r}: {reason}",
            where=shown,
            fix=f"start the database or correct {DATABASE_URL_ENV}, then run the same command again: it publishes "
                f"the lists already scored (the table still holds the previous ones; {out} holds the new ones)",
        ) from None
    log.info("replaced table %s at %s with the lists of %s", table, shown, out)


def _scorer(params: Params, tracking: Any, version: str, dataset: Dataset, parts: Path):
    """(users, their histories, k) -> their top-k rows (user_id, rank, item_id, score) by the model of `version`,
    over every item of the prepared tables minus each user's history; ties keep catalogue order."""
    from llmrec.data.context import first_seen_hours, hours
    from llmrec.models.ranker import catalogue_scorer, is_pair_scorer, load_ranker

    folder = tracking.download_model_dir(params.tracking.model_name, version, parts / "model")
    ranker = load_ranker(folder, device=params.train.device)
    if is_pair_scorer(ranker):
        raise ModelError(
            f"{params.tracking.model_name} version {version} is a cross-encoder: it re-ranks short candidate lists, "
            "and one pass per user and catalogue item is far too slow for every user",
            fix="batch recommendations need a two-tower or hybrid model (model.type), or serve the cross-encoder",
        )
    items = dataset.items.drop_duplicates("item_id").reset_index(drop=True)
    ids = items["item_id"].astype(str).to_numpy(dtype=object)
    position = {item: k for k, item in enumerate(ids)}
    now = hours(pd.Series([dataset.impressions["timestamp"].max()]))[0]
    ages = np.maximum(now - items["item_id"].map(first_seen_hours(dataset)).to_numpy(dtype=float), 0.0)  # NaN: never seen
    score = catalogue_scorer(ranker, items, params.eval.batch_size)

    def top(users: list[str], histories: list[list[str]], k: int) -> pd.DataFrame:
        scores = np.asarray(score([" ".join(h) for h in histories], ages), dtype=np.float64)
        for u, hist in enumerate(histories):  # never recommend what the user already has
            seen = [position[i] for i in hist if i in position]
            scores[u, seen] = -np.inf
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        best = np.take_along_axis(scores, order, axis=1)
        keep = np.isfinite(best)
        return pd.DataFrame({
            "user_id": np.repeat(np.array(users, dtype=object), order.shape[1])[keep.ravel()],
            "rank": np.tile(np.arange(1, order.shape[1] + 1), len(users))[keep.ravel()],
            "item_id": ids[order][keep],
            "score": best[keep],
        })

    return top
