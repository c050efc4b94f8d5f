"""Fuzz every operation of the gateway from its own OpenAPI schema: no input may cause a 5xx.

Bounded (a few dozen examples per operation) so it stays well under a minute; the examples
go over real HTTP to the real server on loopback.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from http_support import TOKEN
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from parallel_agents.server import Limits, ServerThread, create_app

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def fuzz_server() -> Iterator[ServerThread]:
    app = create_app(token=TOKEN, limits=Limits(max_body_bytes=64 * 1024, max_tasks=20))
    with ServerThread(app) as srv:
        yield srv


# The schema comes from the app itself (the same code the server runs); the cases are sent
# over HTTP to a live server. Schemathesis' own pytest plugin does not support pytest 9 yet,
# so each operation is driven through Hypothesis directly.
_SCHEMA = schemathesis.openapi.from_dict(create_app(token=TOKEN).openapi())
OPERATIONS = [result.ok() for result in _SCHEMA.get_all_operations()]


def test_every_operation_is_fuzzed() -> None:
    assert len(OPERATIONS) >= 8


# Invalid inputs exist only for operations with a body, path or query parameter to break.
_CASES = [pytest.param(op, mode, id=f"{op.label} {mode.value}")
          for op in OPERATIONS for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
          if mode is GenerationMode.POSITIVE or op.label not in ("GET /healthz", "GET /metrics")]


@pytest.mark.parametrize(("operation", "mode"), _CASES)
def test_no_input_causes_a_server_error(operation, mode, fuzz_server: ServerThread) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=50, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def check(case) -> None:
        response = case.call_and_validate(base_url=fuzz_server.url, headers=AUTH, timeout=30,
                                          checks=[not_a_server_error])
        if response.status_code >= 400:
            # Every refusal is the documented JSON error, saying what is wrong.
            error = response.json()["error"]
            assert error["type"] and error["message"]

    check()


def test_the_fuzzer_reached_the_endpoints(fuzz_server: ServerThread) -> None:
    """Guards against a fuzz run that silently sends nothing (or only gets 401s)."""
    import httpx

    text = httpx.get(fuzz_server.url + "/metrics", headers=AUTH).text
    for route in ("/api/execute-parallel", "/api/execution/{execution_id}", "/api/chat"):
        assert f'route="{route}",status="4' in text, route
