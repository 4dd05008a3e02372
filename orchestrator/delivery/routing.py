"""Channel routing: which channel and which template locale a message goes out on.

One rule, read by the three places that route: queuing a message (``services``),
sending it (the dispatcher, which re-routes "preferred" against consent at send
time) and forecasting it (journey simulation). The functions are pure, over plain
data; ``customer_channel_order`` and ``channel_orders`` read the customer's own order.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any, Protocol, TypeVar

from orchestrator.consent.models import ChannelPreference
from orchestrator.consent.selectors import ConsentRequest, consent_decisions

#: The channel a sender asks for when it lets the customer's order decide.
PREFERRED = "preferred"

#: Used for "preferred" when the customer has not said: email first (half of consumers
#: prefer it), then the messaging apps, then SMS.
DEFAULT_CHANNEL_ORDER = ("email", "line", "whatsapp", "sms")


def channel_order(own: Sequence[str] | None) -> list[str]:
    """The customer's own channel order, then the default channels they left out."""
    mine = list(own or ())
    return mine + [c for c in DEFAULT_CHANNEL_ORDER if c not in mine]


def customer_channel_order(customer: Any) -> tuple[list[str], bool]:
    """(full order, whether the customer set one) from ``customer.preference``.

    One query unless the caller loaded the preference (``select_related``).
    """
    preference = getattr(customer, "preference", None)
    own = list(preference.channel_order) if preference and preference.channel_order else []
    return channel_order(own), bool(own)


def channel_orders(customer_ids: Iterable[int]) -> dict[int, list[str]]:
    """Full channel order per customer, for a batch, in one query."""
    ids = set(customer_ids)
    if not ids:
        return {}
    own = dict(
        ChannelPreference.objects.filter(customer_id__in=ids).values_list(
            "customer_id", "channel_order"
        )
    )
    return {i: channel_order(own.get(i)) for i in ids}


def reachable_channels(
    order: Iterable[str],
    *,
    topic_channels: Collection[str],
    template_channels: Collection[str],
    address_for: Callable[[str], str],
) -> list[str]:
    """Channels, in ``order``, the topic allows, the template has and the customer has an
    address on: what a "preferred" message can use."""
    return [
        channel
        for channel in order
        if channel in topic_channels and channel in template_channels and address_for(channel)
    ]


def resolve_channel(
    requested: str,
    *,
    order: Sequence[str],
    own_order: bool,
    topic_channels: Collection[str],
    template_channels: Collection[str],
    address_for: Callable[[str], str],
    consented: Callable[[Sequence[str]], Collection[str]] | None = None,
) -> tuple[str, str] | None:
    """(channel, how it was chosen) for a message that asks for ``requested``.

    A named channel is taken as asked (the caller checks it exists and the template has
    it); "preferred" takes the first reachable channel in ``order`` that ``consented``
    (given the reachable channels, returns those the customer's consent to the topic
    allows) lets through - the same pick the dispatcher makes at send time - else the
    first reachable one, whose refusal the dispatcher then records; None if there is
    none. Consent is only asked when there is a choice to make.
    """
    if requested != PREFERRED:
        return requested, f"{requested} as requested"
    options = reachable_channels(
        order,
        topic_channels=topic_channels,
        template_channels=template_channels,
        address_for=address_for,
    )
    if not options:
        return None
    source = "the customer's channel order" if own_order else "the default order"
    if consented is not None and len(options) > 1:
        allowed = consented(options)
        for channel in options:
            if channel in allowed:
                skipped = options[: options.index(channel)]
                if not skipped:
                    break
                return channel, (
                    f"{channel}: first reachable channel in {source} the customer consents "
                    f"to for this topic (not {', '.join(skipped)})"
                )
    return options[0], f"{options[0]}: first reachable channel in {source}"


def topic_consent(customer: Any, topic: Any) -> Callable[[Sequence[str]], set[str]]:
    """For ``resolve_channel``: the channels consent allows ``customer`` for ``topic``."""

    def consented(channels: Sequence[str]) -> set[str]:
        requests = [
            ConsentRequest(customer.id, topic.id, c, customer.address_for(c)) for c in channels
        ]
        decisions = consent_decisions(requests, topics={topic.id: topic})
        return {r.channel for r, d in zip(requests, decisions, strict=True) if d.allowed}

    return consented


def send_options(
    requested: str,
    queued_channel: str,
    *,
    order: Sequence[str],
    topic_channels: Collection[str],
    template_channels: Collection[str],
    address_for: Callable[[str], str],
) -> list[str]:
    """The channels to try at send time, in order; consent picks among them.

    A "preferred" message was given the first reachable channel when it was queued; at
    send time every reachable channel is an option, so one the customer has since
    opted out of gives way to the next. Anything else goes where it was queued.
    """
    if requested != PREFERRED:
        return [queued_channel]
    return reachable_channels(
        order,
        topic_channels=topic_channels,
        template_channels=template_channels,
        address_for=address_for,
    ) or [queued_channel]


class _Decision(Protocol):
    allowed: bool


D = TypeVar("D", bound=_Decision)


def choose_consented(
    options: Sequence[tuple[str, D]], *, current: str = ""
) -> tuple[str, D, tuple[str, ...]]:
    """(channel, its decision, the other allowed channels) from (channel, consent) options.

    The first option consent allows wins and the rest stay alternatives for the
    fatigue policy; when none is allowed, the refusal of ``current`` (the channel the
    message is on) if it is an option, else of the first: a message that goes nowhere
    is not moved.
    """
    if len(options) == 1:  # the usual case, once per message of a batch: no lists
        channel, decision = options[0]
        return channel, decision, ()
    allowed = [(c, d) for c, d in options if d.allowed]
    if allowed:
        channel, decision = allowed[0]
    else:
        channel, decision = next(((c, d) for c, d in options if c == current), options[0])
    return channel, decision, tuple([c for c, _d in allowed[1:]])


def pick_locale(customer_locale: str, available: Collection[str]) -> str | None:
    """The customer's locale, else its language, else English, else any variant."""
    if not available:
        return None
    wanted = (customer_locale or "en").replace("_", "-")
    for candidate in (wanted, wanted.split("-")[0], "en"):
        if candidate in available:
            return candidate
    return sorted(available)[0]
