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
