"""Create or update llmrec's Prefect work pools, offline, with the base job templates they need.

    PREFECT_API_URL=http://127.0.0.1:4200/api python infra/prefect/pools.py            # all four pools
    python infra/prefect/pools.py --pool llmrec-process                                 # just one

| pool            | type       | base job template                                                  |
|-----------------|------------|--------------------------------------------------------------------|
| llmrec-process  | process    | Prefect's default                                                  |
| llmrec-docker   | docker     | prefect-docker's default, env defaults taken from this environment |
| llmrec-k8s      | kubernetes | infra/prefect/k8s-base-job-template.json (config + S3 secret)      |
| llmrec-k8s-gpu  | kubernetes | infra/prefect/k8s-gpu-base-job-template.json (+ GPUs, node pool)   |

The Docker and Kubernetes workers' default templates come from the copy that Prefect ships in its
wheel, so nothing is fetched from the network and no prefect-docker / prefect-kubernetes install is
needed here (the workers themselves need them). Unknown pool names exit with status 2.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
POOLS: dict[str, tuple[str, str | None]] = {  # name -> (worker type, template file in infra/prefect or None)
    "llmrec-process": ("process", None),
    "llmrec-docker": ("docker", None),
    "llmrec-k8s": ("kubernetes", "k8s-base-job-template.json"),
    "llmrec-k8s-gpu": ("kubernetes", "k8s-gpu-base-job-template.json"),
}
# Handed to flow-run containers of the Docker pool (it has no cluster secret store to read them from).
DOCKER_ENV = ("MLFLOW_TRACKING_URI", "LLMREC_DVC_REMOTE", "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID",
              "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")


def bundled_default_template(worker_type: str) -> dict[str, Any]:
    """A worker type's default base job template from the registry copy inside Prefect's wheel."""
    if worker_type == "process":
        from prefect.workers.process import ProcessWorker

        return ProcessWorker.get_default_base_job_template()
    import prefect.server.api

    registry = Path(prefect.server.api.__file__).parent / "collections_data" / "views" / "aggregate-worker-metadata.json"
    for collection in json.loads(registry.read_text()).values():
        for worker in collection.values():
            if worker.get("type") == worker_type:
                return worker["default_base_job_configuration"]
    raise LookupError(f"Prefect {prefect.__version__} ships no default template for worker type {worker_type!r}")


def template_for(name: str, environ: dict[str, str] | None = None) -> dict[str, Any]:
    """The base job template llmrec uses for pool `name`."""
    worker_type, file = POOLS[name]
    template = json.loads((HERE / file).read_text()) if file else bundled_default_template(worker_type)
    if worker_type == "docker":
        env = {k: v for k, v in (os.environ if environ is None else environ).items() if k in DOCKER_ENV}
        template["variables"]["properties"]["env"]["default"] = {"LLMREC_DVC_PULL": "1", **env}
    return template


async def apply(names: list[str]) -> None:
    from prefect import get_client
    from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
    from prefect.exceptions import ObjectNotFound

    async with get_client() as client:
        for name in names:
            worker_type, _ = POOLS[name]
            template = template_for(name)
            try:
                pool = await client.read_work_pool(name)
            except ObjectNotFound:
                await client.create_work_pool(WorkPoolCreate(name=name, type=worker_type, base_job_template=template))
                print(f"work pool {name} ({worker_type}) created")
                continue
            if pool.type != worker_type:
                sys.exit(f"work pool {name} exists with type {pool.type!r}, not {worker_type!r}: delete it first "
                         f"(prefect work-pool delete {name})")
            await client.update_work_pool(name, WorkPoolUpdate(base_job_template=template))
            print(f"work pool {name} ({worker_type}) updated")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pool", action="append", help=f"one of {', '.join(POOLS)} (repeatable; default all)")
    args = parser.parse_args(argv)
    names = args.pool or list(POOLS)
    unknown = [n for n in names if n not in POOLS]
    if unknown:
        parser.error(f"unknown work pool {', '.join(unknown)}: choose from {', '.join(POOLS)}")
    asyncio.run(apply(names))


if __name__ == "__main__":
    main()
