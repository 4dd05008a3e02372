"""The providers whose webhooks we take, one module each, by the name stored with
their events (``WebhookEvent.provider``).

A provider module has ``NAME``, ``LABEL``, ``CHANNELS`` (the channels it sends for
us), ``ENDPOINTS`` (URL name -> route and endpoint), ``verify(request)``,
``receive(request, endpoint)`` (the events to store and the answer) and
``parse(stored_event)`` (one event of ``channels.webhooks.events``). Adding a
provider is its adapter module, its webhook module here, and one line below.
"""

from __future__ import annotations

from types import ModuleType

from channels.webhooks.providers import line, sendgrid, twilio

PROVIDERS: dict[str, ModuleType] = {
    twilio.NAME: twilio,
    sendgrid.NAME: sendgrid,
    line.NAME: line,
}
