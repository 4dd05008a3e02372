from tests.journeys.conftest import template, topic
from tests.webhooks.conftest import secrets_configured

__all__ = ["secrets_configured", "template", "topic"]
