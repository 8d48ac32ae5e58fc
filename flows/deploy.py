"""Serve the `retrain` flow as a deployment, so runs can be started from the Prefect UI or API.

    PREFECT_API_URL=http://127.0.0.1:4200/api python -m flows.deploy     (`make up` does this)

The deployment's parameter form is the flow's signature: the params file and `--set`-style
overrides (e.g. ["train.max_steps=50"]).
"""

from __future__ import annotations

from flows.retrain import retrain

if __name__ == "__main__":
    retrain.serve(
        name="retrain",
        description="Ingest -> validate -> version -> train -> evaluate -> drift -> register -> promote on data.path",
        tags=["llmrec"],
    )
