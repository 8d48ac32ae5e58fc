"""Serve the `retrain` (on demand) and `monitor` (daily) deployments from one process.

    PREFECT_API_URL=http://127.0.0.1:4200/api python -m flows.deploy     (`make up` does this)

Runs start from the Prefect UI (Deployments -> retrain -> Run: a form of typed settings), from
`prefect deployment run retrain/retrain`, or from the monitor's schedule. Run from the project folder:
flow runs work in the current directory (params.yaml, data/, outputs/).

One run at a time (`limit=1`): every run of this project writes the same outputs/ folder.
"""

from __future__ import annotations

from prefect import serve
from prefect.schedules import Cron

from flows.monitor import monitor
from flows.retrain import retrain

DAILY = "0 6 * * *"  # 06:00 UTC, after the nightly batch lands (as in infra/prefect/prefect.yaml)
INBOX = "incoming"  # where new batch folders land (the schedule's `batch` parameter)


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
    ]


if __name__ == "__main__":
    serve(*deployments(), limit=1)
