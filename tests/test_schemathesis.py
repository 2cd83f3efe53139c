"""Schemathesis against the OpenAPI document: generated requests, valid and not, to every operation.

No response may be a 5xx, and every response must be one the document lists, with its schema and
content type. Bounded (a few dozen cases per operation), on SQLite and, where it runs, PostgreSQL.
"""

from __future__ import annotations

from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from tests.server_helpers import POSTGRES_URL, SCRIPTED_CRITERIA, fresh_postgres, start

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def served(request, tiny_bundle_dir, tmp_path):
    from experiment_server import create_app

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'fuzz.db'}"
    else:
        fresh_postgres().dispose()
        url = POSTGRES_URL
    app = create_app({"bundle_dir": tiny_bundle_dir, "database_url": url, "criteria": SCRIPTED_CRITERIA})
    token = start(app.test_client())["token"]  # a real session, so that generated bodies reach the handlers
    yield app, token
    app.extensions["psychinterp_db"].kw["bind"].dispose()


def test_every_response_is_documented_and_none_is_a_server_error(served):
    """Each operation's generated cases run through Hypothesis one operation at a time (schemathesis'
    pytest plugin does not load under this pytest); a failure names the operation and the case."""
    app, token = served
    schema = schemathesis.openapi.from_wsgi("/api/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15
    statuses: Counter[int] = Counter()

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def call(case):
            if "token" in (case.path_parameters or {}):
                case.path_parameters["token"] = token  # a real session, so that bodies reach the handlers
            response = case.call_and_validate(checks=CHECKS)
            statuses[response.status_code] += 1

        try:
            call()
        except Exception as exc:
            raise AssertionError(f"{operation.method.upper()} {operation.path}: {exc}") from exc
    # The cases reached the handlers: stored, refused as malformed, limited, and found missing.
    print(sorted(statuses.items()))
    assert statuses[200] + statuses[201] > 20 and statuses[400] > 20 and statuses[404] > 0
