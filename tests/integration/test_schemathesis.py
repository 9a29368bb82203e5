"""Schemathesis over /openapi.json against a live server: for every documented operation, requests
generated from the spec never get a server error, and every response matches its documented schema.

Bounded: 20 examples per operation and token, derandomized (the same cases every run).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.e2e.conftest import LiveApp, start_live_app, stop_live_app

CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance, content_type_conformance]
EXAMPLES = settings(max_examples=20, deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck))


@pytest.fixture
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApp]:
    # one app per test: the admin run may legitimately change the routing configuration
    # (PUT /api/v1/admin/routing with generated queues and agents), which the next run must not see
    app = start_live_app(tmp_path_factory.mktemp("schemathesis"))
    try:
        yield app
    finally:
        stop_live_app(app)


@pytest.mark.parametrize("token", ["demo-admin", "demo-agent-alice"])
def test_every_operation_conforms_to_the_spec(live: LiveApp, token: str, tmp_path: Path) -> None:
    schema = schemathesis.openapi.from_url(f"{live.base_url}/openapi.json")
    headers = {"Authorization": f"Bearer {token}"}
    failures: list[str] = []
    operations = 0
    with requests.Session() as session:
        # a real call of alice's, so operations on /calls/{call_id} get past "not found"
        resp = session.post(f"{live.base_url}/api/v1/calls", json={"to": "+33612345679"},
                            headers={"Authorization": "Bearer demo-agent-alice"}, timeout=30)
        assert resp.status_code == 201, resp.text
        call_id = resp.json()["call_id"]
        for result in schema.get_all_operations():
            operation = result.ok()
            operations += 1
            known = {"call_id": call_id} if "{call_id}" in operation.path else {}
            if "{agent_id}" in operation.path:
                known["agent_id"] = "alice"

            @EXAMPLES
            @given(case=operation.as_strategy(path_parameters=known or None))
            def check(case: schemathesis.Case) -> None:
                response = case.call(base_url=live.base_url, session=session, headers=headers, timeout=30)
                case.validate_response(response, checks=CHECKS, headers=headers)

            try:
                check()
            except (Exception, BaseExceptionGroup) as exc:  # collect them all: one report per failing operation
                failures.append(f"{operation.label}: {str(exc)[:1500]}")
    assert operations >= 30, operations
    assert not failures, "\n\n".join(failures)


def test_invalid_requests_from_the_spec_never_get_a_server_error(live: LiveApp) -> None:
    """Negative mode: parameters and bodies that break the spec (wrong types, out of range, missing)."""
    schema = schemathesis.openapi.from_url(f"{live.base_url}/openapi.json")
    headers = {"Authorization": "Bearer demo-supervisor"}
    failures: list[str] = []
    with requests.Session() as session:
        for result in schema.get_all_operations():
            operation = result.ok()

            @EXAMPLES
            @given(case=operation.as_strategy(generation_mode=GenerationMode.NEGATIVE))
            def check(case: schemathesis.Case) -> None:
                response = case.call(base_url=live.base_url, session=session, headers=headers, timeout=30)
                case.validate_response(response, checks=[not_a_server_error], headers=headers)

            try:
                check()
            except (Exception, BaseExceptionGroup) as exc:
                failures.append(f"{operation.label}: {str(exc)[:1500]}")
    assert not failures, "\n\n".join(failures)
