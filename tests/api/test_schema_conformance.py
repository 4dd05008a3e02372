"""Schemathesis over every operation of /api/schema/: no 5xx, every response as the
schema documents it (status, body), and input the schema forbids refused."""

from __future__ import annotations

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from orchestrator.audience.services import customer_upsert
from orchestrator.consent.services import topic_create
from orchestrator.delivery.template_services import template_create

#: Examples per operation and generation mode: enough to find the classic mistakes,
#: few enough that every operation runs in a few seconds.
EXAMPLES = 25
SEED = 20261206


def _load_schema():
    schema = schemathesis.openapi.from_wsgi("/api/schema/", get_wsgi_application())
    schema.config.seed = SEED
    schema.config.generation.update(deterministic=True, database="none", max_examples=EXAMPLES)
    return schema


schema = _load_schema()


@pytest.fixture
def same_connection(db):
    """Requests run in this thread on the test's connection and transaction; the WSGI
    handler must not close that connection after each response (django.test.Client
    disconnects the same signal handlers)."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def auth_header(same_connection, api_key_factory):
    # Hypothesis starts from the smallest strings: with "0" in use as a customer, topic
    # and template, many examples reach past the lookups into the services.
    customer_upsert(external_id="0", email="zero@example.com", phone="+819012345678")
    topic_create(key="0", name="Zero", kind="transactional", channels=["email", "sms"])
    template_create(
        key="0",
        name="Zero",
        topic="0",
        variants=[{"channel": "email", "locale": "en", "subject": "S", "body": "{{ data.x }}"}],
    )
    return {"Authorization": f"Bearer {api_key_factory()}"}


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_every_operation_keeps_to_the_schema(case, auth_header):
    # Not positive_data_acceptance: a schema-valid body may still name an unknown
    # template or an invalid time zone, which only the service can judge (a 400).
    case.call_and_validate(headers=auth_header, excluded_checks=[positive_data_acceptance])
