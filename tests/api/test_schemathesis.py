"""Schemathesis over the OpenAPI document (issue 13): generated requests to every operation,
as the admin, on SQLite and PostgreSQL; no answer may be a 5xx. Bounded (a few examples per
operation, derandomized, so a run is repeatable) to keep ``make test`` short.

Each operation's Hypothesis strategy is driven directly (``as_strategy``): schemathesis'
pytest plugin does not run on this pytest.
"""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok

from tests.api.conftest import Api

#: examples per operation (each is one request)
EXAMPLES = 4
MIN_OPERATIONS = 50


def test_no_generated_request_gets_a_server_error(api: Api) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", api.client.app)
    headers = api.headers(version="2.96")
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result  # the document parses
        operations.append(result.ok())
    assert len(operations) >= MIN_OPERATIONS, len(operations)
    calls: dict[str, int] = {}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            derandomize=True,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def call(case: Any) -> None:
            case.call_and_validate(
                headers={**(case.headers or {}), **headers}, checks=[not_a_server_error]
            )
            calls[case.operation.label] = calls.get(case.operation.label, 0) + 1

        call()
    assert len(calls) == len(operations), set(o.label for o in operations) - set(calls)


def test_the_document_has_the_real_error_codes_and_the_bodies(api: Api) -> None:
    doc = api.client.get("/openapi.json").json()
    ops = {(p, m): op for p, methods in doc["paths"].items() for m, op in methods.items()}
    assert not [k for k, op in ops.items() if "422" in op["responses"]]
    assert all("400" in op["responses"] for op in ops.values())
    migrate = ops[("/v2.1/servers/{server_id}/action", "post")]["requestBody"]
    live = migrate["content"]["application/json"]["schema"]["oneOf"][0]
    assert live["properties"]["os-migrateLive"]["properties"]["post_copy"]["type"] == "boolean"
    with_body = {k for k, op in ops.items() if "requestBody" in op}
    bodyless = {("/identity/v3/projects/{project_id}/users/{user_id}/roles/{role_id}", "put")}
    assert {(p, m) for p, m in ops if m in ("post", "put", "patch")} - with_body == bodyless
    # what the document says is what the API does: a body of the wrong shape is a 400
    r = api.post("/v2.1/orbit-hosts", {"name": 5})
    assert r.status_code == 400 and "badRequest" in r.json()
