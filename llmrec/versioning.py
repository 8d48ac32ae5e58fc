"""git + DVC: data versions and pipeline lineage. The only module that runs git or dvc."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from llmrec.errors import VersioningError

log = logging.getLogger(__name__)
TRACKED_DATA = "data"


@dataclass
class DataVersion:
    dvc_md5: str        # DVC's hash of the data/ folder (restore with `dvc checkout` of this .dvc)
    nfiles: int
    size: int
    git_revision: str   # HEAD of the repository when the data was versioned
    git_dirty: bool     # uncommitted changes at that time (data.dvc itself included)
    dvc_file: str       # the .dvc file content, enough to restore the data from the DVC cache/remote

    def to_dict(self) -> dict:
        return asdict(self)


def _executable(name: str) -> str | None:
    """Prefer the tool installed beside this Python (the venv's dvc), then PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.is_file() else shutil.which(name)


def _run(args: list[str], cwd: Path, what: str) -> str:
    exe = _executable(args[0])
    if exe is None:
        raise VersioningError(f"{args[0]} is not installed", fix="run `make setup`")
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "ITERATIVE_DO_NOT_TRACK": "1"}
    proc = subprocess.run([exe, *args[1:]], cwd=cwd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise VersioningError(
            f"{what} failed: `{' '.join(args)}` exited {proc.returncode}: {(proc.stderr or proc.stdout).strip()[-800:]}",
            where=str(cwd),
        )
    return proc.stdout


def repo_root(start: str | Path = ".") -> Path:
    """The folder holding .dvc/ (a DVC repo inside a git repo)."""
    start = Path(start).resolve()
    for folder in (start, *start.parents):
        if (folder / ".dvc").is_dir():
            return folder
    raise VersioningError(
        "not inside a DVC repository",
        where=str(start),
        fix="run llmrec from the project folder (it has .dvc/), or `git init && dvc init` there",
    )


def git_state(root: Path) -> tuple[str, bool]:
    try:
        rev = _run(["git", "rev-parse", "HEAD"], root, "reading the git revision").strip()
    except VersioningError:
        rev = "no-commit"
    dirty = bool(_run(["git", "status", "--porcelain", "--untracked-files=no"], root, "git status").strip())
    return rev, dirty


def version_data(data_path: str | Path, root: str | Path = ".", push: bool = True) -> DataVersion:
    """`dvc add data` (a new version when the files changed), push it, and describe it."""
    root = repo_root(root)
    data_path = Path(data_path).resolve()
    tracked = root / TRACKED_DATA
    if tracked != data_path and tracked not in data_path.parents:
        raise VersioningError(
            f"{data_path} is outside the DVC-tracked folder {tracked}",
            fix="copy or link the dataset under data/ so every model's data can be restored",
        )
    _run(["dvc", "add", TRACKED_DATA], root, "dvc add")
    if push and _has_remote(root):
        _run(["dvc", "push", f"{TRACKED_DATA}.dvc"], root, "dvc push")
    dvc_file = (root / f"{TRACKED_DATA}.dvc").read_text()
    out = yaml.safe_load(dvc_file)["outs"][0]
    rev, dirty = git_state(root)
    version = DataVersion(out["md5"], int(out.get("nfiles", 0)), int(out.get("size", 0)), rev, dirty, dvc_file)
    log.info("data version %s (%d files), git %s%s", version.dvc_md5, version.nfiles, rev[:10], " dirty" if dirty else "")
    return version


def _has_remote(root: Path) -> bool:
    return bool(_run(["dvc", "remote", "list"], root, "dvc remote list").strip())


def commit_pipeline(root: str | Path = ".") -> None:
    """Record the outputs the flow produced in dvc.lock (`dvc commit`), so `dvc status` is clean.

    Only call this when the flow ran with params.yaml as it is: dvc.lock then tells the truth.
    """
    root = repo_root(root)
    if (root / "dvc.yaml").is_file():
        _run(["dvc", "commit", "--force"], root, "dvc commit")


def pipeline_status(root: str | Path = ".") -> str:
    return _run(["dvc", "status"], repo_root(root), "dvc status").strip()


LATEST_SNAPSHOT = Path(".llmrec") / "data-before-checkout.json"  # under the repo root (git-ignored)


def checkout_data(dvc_file: str, root: str | Path = ".") -> str:
    """Restore data/ to the version described by `dvc_file` (a data.dvc text); returns its md5.

    The current data is snapshotted first (`dvc add`, so it is in the local cache) and its data.dvc text
    is kept in .llmrec/data-before-checkout.json, so `restore_latest` (`llmrec data checkout --latest`)
    brings it back. Checking out several old versions in a row keeps the first snapshot: the data as it
    was before the first checkout, unless data/ was changed in between.
    """
    root = repo_root(root)
    wanted = yaml.safe_load(dvc_file)["outs"][0]["md5"]
    if (root / TRACKED_DATA).exists():
        _run(["dvc", "add", TRACKED_DATA], root, "dvc add (snapshot of the current data)")
        current = (root / f"{TRACKED_DATA}.dvc").read_text()
        pending = latest_snapshot(root)
        if pending is None or yaml.safe_load(current)["outs"][0]["md5"] != pending["checked_out"]:
            pending = {"dvc_file": current}
        _save_snapshot(root, {**pending, "checked_out": wanted})
    _checkout(dvc_file, wanted, root)
    log.info("data/ restored to version %s", wanted)
    return wanted


def latest_snapshot(root: str | Path = ".") -> dict | None:
    """The snapshot `checkout_data` took of the data it replaced ({"dvc_file", "checked_out"}), if one is pending."""
    path = repo_root(root) / LATEST_SNAPSHOT
    return json.loads(path.read_text()) if path.is_file() else None


def _save_snapshot(root: Path, snapshot: dict) -> None:
    path = root / LATEST_SNAPSHOT
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(snapshot, indent=2))
    tmp.replace(path)


def restore_latest(root: str | Path = ".") -> str:
    """Bring data/ back to what it was before the last `checkout_data` (series); returns its md5."""
    root = repo_root(root)
    snapshot = latest_snapshot(root)
    if snapshot is None:
        raise VersioningError(
            "no data snapshot to return to: data/ was not replaced by `llmrec data checkout` (or was restored already)",
            where=str(root / LATEST_SNAPSHOT),
            fix="`dvc status data.dvc` shows whether data/ matches data.dvc; `llmrec data checkout --model-version N` restores a model's data",
        )
    wanted = yaml.safe_load(snapshot["dvc_file"])["outs"][0]["md5"]
    _checkout(snapshot["dvc_file"], wanted, root)
    (root / LATEST_SNAPSHOT).unlink()
    log.info("data/ back to version %s (as before the checkout)", wanted)
    return wanted


def _checkout(dvc_file: str, wanted: str, root: Path) -> None:
    (root / f"{TRACKED_DATA}.dvc").write_text(dvc_file)
    try:
        _run(["dvc", "checkout", "--force", f"{TRACKED_DATA}.dvc"], root, "dvc checkout")
    except VersioningError:
        if not _has_remote(root):
            raise
        _run(["dvc", "pull", "--force", f"{TRACKED_DATA}.dvc"], root, "dvc pull")
    status = _run(["dvc", "status", f"{TRACKED_DATA}.dvc"], root, "dvc status")
    if "up to date" not in status:
        raise VersioningError(f"data/ does not match version {wanted} after checkout: {status.strip()}", where=str(root))
