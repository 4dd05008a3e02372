from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.emulator import sendgrid as sendgrid_emulator
from tests.emulator.server import ProviderEmulator


@pytest.fixture
def emulator() -> Iterator[ProviderEmulator]:
    """The SendGrid emulator on a port of its own (test modules may define their own)."""
    emulator = ProviderEmulator().start()
    sendgrid_emulator.install(emulator)
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture(autouse=True)
def _no_provider_holds() -> Iterator[None]:
    """A provider's reset holds its sender in the shared store: never past a test."""
    from channels.adapters.ratelimit import clear_holds

    clear_holds()
    yield
    clear_holds()
