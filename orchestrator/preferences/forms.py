"""The preference center's form: one switch per shown cell, plus the delivery preferences.

It only translates a submit into ``PreferenceChanges``; the consent service decides
what changed and writes the ledger, as it does for the API.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from django import forms
from django.utils.translation import gettext_lazy as _

from orchestrator.consent.models import Topic
from orchestrator.consent.preferences import DEFAULT_DIGEST_TIME, UNSET, PreferenceChanges
from orchestrator.preferences.selectors import PreferenceState

#: The highest personal weekly cap offered; above it a cap would not hold anything back.
MAX_PER_WEEK = 50
#: How far ahead a pause may reach.
MAX_PAUSE = dt.timedelta(days=366)

#: Time zones offered first: where most customers live. Any IANA zone is accepted.
COMMON_TIMEZONES = (
    "Asia/Tokyo",
    "UTC",
    "Asia/Seoul",
    "Asia/Shanghai",
    "Asia/Singapore",
    "Australia/Sydney",
    "Europe/London",
    "Europe/Paris",
    "America/New_York",
    "America/Chicago",
    "America/Los_Angeles",
    "Pacific/Honolulu",
)

CHANNEL_LABELS = {
    "email": _("Email"),
    "sms": _("SMS"),
    "whatsapp": _("WhatsApp"),
    "line": _("LINE"),
}


CADENCE_CHOICES = [
    ("immediate", _("As it happens")),
    ("daily", _("Daily digest")),
    ("weekly", _("Weekly digest")),
]
WEEKDAY_CHOICES = [
    (0, _("Monday")),
    (1, _("Tuesday")),
    (2, _("Wednesday")),
    (3, _("Thursday")),
    (4, _("Friday")),
    (5, _("Saturday")),
    (6, _("Sunday")),
]


def cell_name(topic_id: int, channel: str) -> str:
    return f"t{topic_id}_{channel}"


class PreferencesForm(forms.Form):
    #: The switches the page showed, so that a submit applies to those only.
    shown = forms.CharField(widget=forms.HiddenInput, required=False)
    timezone = forms.ChoiceField(label=_("Time zone"))
    quiet_start = forms.TimeField(
        label=_("Quiet from"),
        required=False,
        widget=forms.TimeInput(format="%H:%M", attrs={"type": "time"}),
    )
    quiet_end = forms.TimeField(
        label=_("Quiet until"),
        required=False,
        widget=forms.TimeInput(format="%H:%M", attrs={"type": "time"}),
    )
    max_per_week = forms.IntegerField(
        label=_("At most this many marketing messages a week"),
        required=False,
        min_value=1,
        max_value=MAX_PER_WEEK,
        widget=forms.NumberInput(attrs={"inputmode": "numeric"}),
        help_text=_("Empty: no limit of your own. Extra messages wait for the next week."),
    )
    paused_until = forms.DateField(
        label=_("Pause marketing until"),
        required=False,
        widget=forms.DateInput(format="%Y-%m-%d", attrs={"type": "date"}),
        help_text=_("Marketing resumes on this date. Empty: not paused."),
    )

    def __init__(
        self,
        *args,
        topics: list[Topic],
        channels: list[str],
        current: PreferenceState,
        today: dt.date,
        digestible: list[Topic] = (),
        **kwargs,
    ) -> None:
        initial = {
            "timezone": current.timezone,
            "quiet_start": current.quiet_start,
            "quiet_end": current.quiet_end,
            "max_per_week": current.max_per_week,
            "paused_until": current.paused_until,
        }
        super().__init__(*args, initial=initial, **kwargs)
        self.today = today
        self.channels = channels
        #: (topic, [(channel, field name or None when the topic does not use it)]).
        self.grid: list[tuple[Topic, list[tuple[str, str | None]]]] = []
        self.cells: list[tuple[int, str]] = []
        for topic in topics:
            row = []
            for channel in channels:
                if channel not in topic.channels:
                    row.append((channel, None))
                    continue
                name = cell_name(topic.id, channel)
                self.fields[name] = forms.BooleanField(
                    required=False,
                    initial=current.subscriptions.get((topic.id, channel), False),
                    label=f"{topic.name_in()}: {CHANNEL_LABELS.get(channel, channel)}",
                )
                row.append((channel, name))
                self.cells.append((topic.id, channel))
            self.grid.append((topic, row))
        for channel in channels:
            self.fields[f"allow_{channel}"] = forms.BooleanField(
                required=False,
                initial=current.channels_allowed.get(channel, True),
                label=CHANNEL_LABELS.get(channel, channel),
            )
        #: (topic, cadence field, time field, weekday field) per digestible topic.
        self.digest_topics: list[int] = []
        #: Topic id -> messages waiting in its digest, told next to the choice.
        self.digest_held = dict(current.digest_held)
        for topic in digestible:
            cadence, at, weekday = current.digests.get(
                topic.id, ("immediate", DEFAULT_DIGEST_TIME, None)
            )
            name = topic.name_in()
            self.fields[f"digest_{topic.id}"] = forms.ChoiceField(
                choices=CADENCE_CHOICES, initial=cadence, label=name
            )
            self.fields[f"digest_{topic.id}_time"] = forms.TimeField(
                label=_("At"),
                initial=at,
                widget=forms.TimeInput(format="%H:%M", attrs={"type": "time"}),
            )
            self.fields[f"digest_{topic.id}_weekday"] = forms.TypedChoiceField(
                choices=WEEKDAY_CHOICES,
                coerce=int,
                initial=weekday if weekday is not None else 0,
                label=_("On (weekly)"),
            )
            self.digest_topics.append(topic.id)
        self.fields["shown"].initial = " ".join(
            [cell_name(t, c) for t, c in self.cells] + [f"allow_{c}" for c in channels]
        )
        zones = list(COMMON_TIMEZONES)
        if current.timezone not in zones:
            zones.insert(0, current.timezone)
        self.fields["timezone"].choices = [(z, z.replace("_", " ")) for z in zones]
        order = [c for c in current.channel_order if c in channels]
        order += [c for c in channels if c not in order]
        choices = [(c, CHANNEL_LABELS.get(c, c)) for c in channels]
        self.order_fields: list[str] = []
        self._stored_order, self._shown_order = current.channel_order, order
        if len(channels) > 1:
            for position, channel in enumerate(order, start=1):
                name = f"order_{position}"
                self.fields[name] = forms.ChoiceField(
                    choices=choices, initial=channel, label=_("Choice %(n)d") % {"n": position}
                )
                self.order_fields.append(name)

    # Bound fields for the template, which cannot look a field up by a computed name.

    def grid_rows(self):
        return [
            (topic, [(channel, self[name] if name else None) for channel, name in row])
            for topic, row in self.grid
        ]

    def digest_rows(self):
        return [
            (
                self[f"digest_{t}"],
                self[f"digest_{t}_time"],
                self[f"digest_{t}_weekday"],
                self.digest_held.get(t, 0),
            )
            for t in self.digest_topics
        ]

    def channel_fields(self):
        return [self[f"allow_{channel}"] for channel in self.channels]

    def order_bound_fields(self):
        return [self[name] for name in self.order_fields]

    def clean_paused_until(self) -> dt.date | None:
        value = self.cleaned_data.get("paused_until")
        if value is None:
            return None
        if value <= self.today:
            raise forms.ValidationError(_("Choose a date after today."))
        if value > self.today + MAX_PAUSE:
            raise forms.ValidationError(_("Choose a date within a year."))
        return value

    def clean(self):
        data = super().clean()
        start, end = data.get("quiet_start"), data.get("quiet_end")
        if (start is None) != (end is None):
            self.add_error(
                "quiet_end" if end is None else "quiet_start",
                _("Give both times, or leave both empty for no quiet hours."),
            )
        elif start is not None and start == end:
            self.add_error("quiet_end", _("The end must differ from the start."))
        order = [data.get(name) for name in self.order_fields]
        if None not in order and len(set(order)) != len(order):
            self.add_error(self.order_fields[-1], _("Choose each channel once."))
        return data

    def shown_cells(self) -> list[tuple[int, str]]:
        """The topic switches the submitted page showed (a topic added since is left alone)."""
        shown = set(self.cleaned_data.get("shown", "").split())
        return [(t, c) for t, c in self.cells if cell_name(t, c) in shown]

    def shown_channels(self) -> list[str]:
        shown = set(self.cleaned_data.get("shown", "").split())
        return [c for c in self.channels if f"allow_{c}" in shown]

    def changes(self) -> PreferenceChanges:
        """The submit as the consent service's arguments: only the switches it showed."""
        data = self.cleaned_data
        tz = data["timezone"]
        start, end = data.get("quiet_start"), data.get("quiet_end")
        return PreferenceChanges(
            topics=tuple((t, c, bool(data.get(cell_name(t, c)))) for t, c in self.shown_cells()),
            channels=tuple((c, bool(data.get(f"allow_{c}"))) for c in self.shown_channels()),
            timezone=tz,
            quiet_hours=(start, end) if start is not None and end is not None else None,
            max_per_week=data.get("max_per_week"),
            paused_until=self._paused_until(tz),
            channel_order=self._order(),
            digests=tuple(self._digests()),
        )

    def _digests(self):
        data = self.cleaned_data
        for topic_id in self.digest_topics:
            cadence = data[f"digest_{topic_id}"]
            weekday = data[f"digest_{topic_id}_weekday"] if cadence == "weekly" else None
            yield topic_id, cadence, data[f"digest_{topic_id}_time"], weekday

    def _paused_until(self, tz: str):
        paused = self.cleaned_data.get("paused_until")
        if paused is None:
            return None
        # The page shows a pause as the local date it ends on. Untouched, the date says
        # nothing about the instant (one set over the API may end at 15:00): leave it
        # be. A date picked here ends at midnight in the customer's zone.
        if paused == self.initial.get("paused_until"):
            return UNSET
        return local_midnight(paused, tz)

    def _order(self) -> tuple[str, ...]:
        order = [self.cleaned_data[name] for name in self.order_fields]
        # Untouched, the selects show the stored order completed with the channels it
        # lacks; saving that back would record a change the customer never made.
        return self._stored_order if order == self._shown_order else tuple(order)


def local_midnight(day: dt.date, tz: str) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(tz))


def local_today(tz: str, now: dt.datetime) -> dt.date:
    return now.astimezone(ZoneInfo(tz or "UTC")).date()
