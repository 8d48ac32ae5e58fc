"""Fuzz the REST API from its own OpenAPI schema (schemathesis): no 5xx, and every answer is what the schema says.

Schemathesis sends schema-valid requests (positive) and requests that break the schema (negative) to the app
in-process (ASGI), for both model types. Checks: no server error; status codes, content types and bodies
conform to the documented responses; schema-breaking requests are refused with a 4xx. Not checked:
"positive data is accepted" - a schema-valid request may still name ids the served catalogue does not know,
which the schema cannot express, and that is a documented 422.
Deterministic: Hypothesis is derandomized and keeps no example database.
"""

from __future__ import annotations

from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from llmrec import tracking
from llmrec.config import ServeLimits
from llmrec.serving import create_app

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          negative_data_rejection]
EXAMPLES = 150  # per model type and mode, spread over the three operations
# small limits keep each generated request cheap; the checks do not depend on their size
LIMITS = ServeLimits(max_candidates=20, max_history=8, max_k=25, max_text_chars=200, max_body_bytes=65536)


@pytest.fixture(scope="module", params=["m", "tt"], ids=["cross-encoder", "two-tower"])
def api(request, serving_registry):
    """The app serving one model type of the shared registry, with its model loaded (no poll thread)."""
    reg, model = serving_registry, request.param
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)  # earlier tests' mlflow.set_tracking_uri leaves it set
        tracking.set_alias(model, "fuzz", reg.versions[model][0], root=reg.root)
        app = create_app(model, alias="fuzz", poll_seconds=3600, root=reg.root, device="cpu", limits=LIMITS)
        holder = app.state.holder
        assert holder.refresh() and holder.current is not None
    yield schemathesis.openapi.from_asgi("/openapi.json", app)
    holder.stop()


# schemathesis' own pytest integration (`schemathesis.pytest.from_fixture`) fails under pytest 9 ("'Function'
# object has no attribute '_nodeid'" in schemathesis 4.32.5), so the strategies are driven with Hypothesis directly.
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["valid", "invalid"])
def test_api_conforms_to_its_schema(api, mode):
    @given(case=api.as_strategy(mode))
    @settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
    def fuzz(case) -> None:
        response = case.call_and_validate(checks=CHECKS)
        seen[f"{case.method} {case.path} {response.status_code}"] += 1

    seen: Counter[str] = Counter()
    fuzz()
    assert not any(key.endswith(("500", "502", "503")) for key in seen), seen
    if mode is GenerationMode.POSITIVE:  # the scoring path was part of it, not only refusals
        assert seen["POST /recommend 200"] > 0, seen
