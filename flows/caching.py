"""Task caching for the expensive stages: the cache key is the data version + the params that stage reads.

A stage's key = Prefect's INPUTS policy over its version inputs (the DVC md5 of data/, and for later
stages the model's weights fingerprint and the champion's version) + a key function over the parts of
the params that stage depends on (e.g. the `data`, `model` and `train` sections for training). Other
params (tracking.experiment, eval.*, ...) do not invalidate training.

Stages hand over through files under outputs/, so a cached result is only good while those files are
the ones the stage wrote: every cached task returns {"result": ..., "files": digest of its outputs},
and `run_cached` re-runs the stage (refresh_cache) when the files changed since (another run with
other params overwrote them, or outputs/ was deleted).

Results are persisted as JSON under outputs/prefect-results (relative to the project folder, so
`make clean` drops them with the outputs they describe).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from prefect.cache_policies import INPUTS, CacheKeyFnPolicy, CachePolicy

from llmrec.config import Params, load_params

RESULTS = Path("outputs/prefect-results")


def _pick(params: Params, dotted: str) -> Any:
    node: Any = params
    for part in dotted.split("."):
        node = getattr(node, part)
    return node.model_dump(mode="json") if hasattr(node, "model_dump") else node


def params_key(params: Params, fields: Iterable[str]) -> str:
    """sha256 of the named params (sections like "train" or single fields like "promotion.metric")."""
    picked = {name: _pick(params, name) for name in sorted(fields)}
    return hashlib.sha256(json.dumps(picked, sort_keys=True, default=str).encode()).hexdigest()


def stage_cache(*fields: str) -> CachePolicy:
    """INPUTS (minus the params file name and the override strings) + the hash of `fields` of the loaded params."""

    def key(_context: Any, inputs: dict[str, Any]) -> str:
        return params_key(load_params(inputs["params_file"], inputs["overrides"]), fields)

    return (INPUTS - "params_file" - "overrides") + CacheKeyFnPolicy(cache_key_fn=key)


def digest(paths: Iterable[str | Path]) -> dict[str, str]:
    """sha256 per path (a folder: over its files' relative names and bytes; missing: "missing")."""
    out = {}
    for path in map(Path, paths):
        if path.is_file():
            out[str(path)] = _sha_file(path)
        elif path.is_dir():
            h = hashlib.sha256()
            for f in sorted(p for p in path.rglob("*") if p.is_file()):
                h.update(str(f.relative_to(path)).encode() + b"\0" + _sha_file(f).encode())
            out[str(path)] = h.hexdigest()
        else:
            out[str(path)] = "missing"
    return out


def _sha_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def run_cached(stage: Any, *args: Any, log: Callable[[str], None] | None = None) -> tuple[dict[str, Any], bool]:
    """Run a cached stage task; returns (its result, whether it came from the cache).

    A cached result whose output files changed since is not trusted: the stage runs again.
    """
    state = stage(*args, return_state=True)
    wrapped = state.result()
    cached = state.name == "Cached"
    if cached and digest(wrapped["files"]) != wrapped["files"]:
        if log:
            log(f"{stage.name}: cached result found, but its outputs changed on disk since: running it again")
        wrapped = stage.with_options(refresh_cache=True)(*args)
        cached = False
    return wrapped["result"], cached
