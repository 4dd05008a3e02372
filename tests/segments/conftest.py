from tests.journeys.conftest import template, topic

__all__ = ["template", "topic"]
