"""Resolve adapters by channel alias from ``settings.CHANNEL_ADAPTERS``, once per process."""

from __future__ import annotations

from functools import cache

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.utils.module_loading import import_string

from channels.adapters.base import ChannelAdapter


@cache
def get_adapter(alias: str) -> ChannelAdapter:
    config = settings.CHANNEL_ADAPTERS.get(alias)
    if config is None:
        raise ImproperlyConfigured(f"CHANNEL_ADAPTERS has no entry for {alias!r}")
    try:
        backend = import_string(config["BACKEND"])
    except (ImportError, KeyError) as exc:
        raise ImproperlyConfigured(f"CHANNEL_ADAPTERS[{alias!r}]: {exc}") from exc
    return backend(alias=alias, **config.get("OPTIONS", {}))


def reset_adapters(**_kwargs) -> None:
    get_adapter.cache_clear()


def _on_setting_changed(*, setting: str, **_kwargs) -> None:
    if setting == "CHANNEL_ADAPTERS":
        reset_adapters()


setting_changed.connect(_on_setting_changed)
