"""Fixtures for the platform tests (dev server, demo, admin, health)."""

import pytest


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slow: starts real processes (the dev server); part of `make test`"
    )


@pytest.fixture
def demo(db):
    from orchestrator.demo.services import load_demo

    return load_demo()
