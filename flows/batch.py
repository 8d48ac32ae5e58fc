"""The `batch-recommend` flow: every user's top-k from the champion, to Parquet (thin wiring over llmrec.batch).

A nightly job: teams feed emails, home pages and caches from the lists. A run that stopped (a crash, a
cancelled run, a lost worker) resumes from the chunks it wrote when started again with the same settings.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.retrain import MINUTE, SERVICE
from llmrec.config import load_params


@task(name="recommend-all", cache_policy=NO_CACHE, timeout_seconds=6 * 60 * MINUTE, **SERVICE)
def recommend_all(params_file: str, overrides: list[str], users: list[str]) -> dict[str, Any]:
    from llmrec.batch import recommend_all as run

    return run(load_params(params_file, overrides), users=users or None, progress=False)


@flow(name="batch-recommend", log_prints=True)
def batch_recommend(
    users_file: str = "",
    params_file: str = "params.yaml",
    overrides: list[str] = [],  # noqa: B006 - the Prefect form needs a literal default
) -> dict[str, Any]:
    """Write the champion's top-k (batch.k) for every user of the prepared tables to batch.out (Parquet).

    Args:
        users_file: A text file of user ids, one per line (relative to the project folder); empty = every user.
        params_file: The params file (relative to the project folder).
        overrides: Advanced: section.key=value settings, like `llmrec --set` (e.g. batch.k=20).
    """
    from pathlib import Path

    users = [line.strip() for line in Path(users_file).read_text().splitlines() if line.strip()] if users_file else []
    result = recommend_all(params_file, overrides, users)
    get_run_logger().info("wrote %s rows for %s users to %s (model v%s, data %s)", result["rows"], result["users"],
                          result["out"], result["model_version"], result["data_version"])
    return result
