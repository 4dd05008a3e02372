from __future__ import annotations

import pytest

from channels.adapters import locmem
from tests.delivery.factories import locmem_adapters


@pytest.fixture
def outbox(settings):
    """The locmem adapter on every channel; yields its (emptied) outbox."""
    settings.CHANNEL_ADAPTERS = locmem_adapters()
    locmem.clear()
    yield locmem.outbox
    locmem.clear()
