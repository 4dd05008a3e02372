from tests.delivery.conftest import outbox  # noqa: F401 - the locmem outbox fixture
