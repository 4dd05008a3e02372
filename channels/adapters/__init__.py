"""Channel adapters: one per provider, loaded by alias from ``settings.CHANNEL_ADAPTERS``."""

from channels.adapters.base import (
    AdapterError,
    ChannelAdapter,
    OutboundMessage,
    SendResult,
)
from channels.adapters.registry import get_adapter, reset_adapters

__all__ = [
    "AdapterError",
    "ChannelAdapter",
    "OutboundMessage",
    "SendResult",
    "get_adapter",
    "reset_adapters",
]
