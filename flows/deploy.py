"""Serve the `retrain` (on demand), `monitor` (daily) and `batch-recommend` (daily) deployments from one process.

    PREFECT_API_URL=http://127.0.0.1:4200/api python -m flows.deploy     (`make up` does this)

Runs start from the Prefect UI (Deployments -> retrain -> Run: a form of typed settings), from
`prefect deployment run retrain/retrain`, or from the monitor's schedule. Run from the project folder:
flow runs work in the current directory (params.yaml, data/, outputs/).

One run at a time (`limit=1`): every run of this project writes the same outputs/ folder.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from prefect import serve
from prefect.schedules import Cron

from flows.batch import batch_recommend
from flows.monitor import monitor
from flows.retrain import retrain

DAILY = "0 6 * * *"  # 06:00 UTC, after the nightly batch lands (as in infra/prefect/prefect.yaml)
NIGHTLY_LISTS = "0 7 * * *"  # 07:00 UTC: every user's top-k, after the monitor (and a retrain it started)
INBOX = "incoming"  # where new batch folders land (the schedule's `batch` parameter)
REPEAT_EVERY = 600.0  # seconds: how often an unchanged runner notice (e.g. "1 scheduled runs skipped") is repeated


class OnceUntilChanged(logging.Filter):
    """Lets a log message through when it differs from the last one, or when `every` seconds have passed.

    The runner polls every few seconds and, while a run holds its one slot, logs "1 scheduled runs skipped
    (at capacity)" at each poll: the first says what happens, the hundreds after it hide the run's own log."""

    def __init__(self, every: float = REPEAT_EVERY, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.every, self.clock = every, clock
        self._last: tuple[str, float] | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        message, now = record.getMessage(), self.clock()
        if self._last is not None and self._last[0] == message and now - self._last[1] < self.every:
            return False
        self._last = (message, now)
        return True


def prepare(root: str | Path = ".") -> None:
    """Before serving: the monitor schedule's batch folder exists (its runs failed with "the batch folder does
    not exist" until one was made), and the runner's repeated notices are logged once until they change."""
    (Path(root) / INBOX).mkdir(exist_ok=True)
    logging.getLogger("prefect.runner").addFilter(OnceUntilChanged())


def deployments() -> list:
    return [
        retrain.to_deployment(
            name="retrain",
            description="Ingest -> validate -> version -> train -> evaluate -> drift -> register -> promote on data.path "
            "(on demand: fill in the settings form; untouched fields keep params.yaml's values)",
            tags=["llmrec"],
        ),
        monitor.to_deployment(
            name="monitor",
            description=f"Judge the newest batch in {INBOX}/ against the champion's data; retrain when drift says so (daily)",
            tags=["llmrec"],
            schedules=[Cron(DAILY, timezone="UTC", parameters={"batch": INBOX})],
        ),
        batch_recommend.to_deployment(
            name="batch-recommend",
            description="Every user's top-k from the champion to Parquet (batch.out), tagged with the model and data "
            "versions; a stopped run resumes from the chunks it wrote (daily, after the monitor)",
            tags=["llmrec"],
            schedules=[Cron(NIGHTLY_LISTS, timezone="UTC")],
        ),
    ]


if __name__ == "__main__":
    prepare()
    serve(*deployments(), limit=1)
