"""Journeys: the editable draft (Journey + Step rows), its published versions, and the
customers travelling through them (Enrollment, with a StepRun log of every step taken).

The marketer edits Step rows in the admin. Activating a journey (or saving an active
one) publishes a JourneyVersion: an immutable JSON definition, the same format the
admin exports and ``/api/v1/journeys`` reads and writes. The engine only ever runs a
version, so editing a live journey never changes the path of someone already on it.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from orchestrator.consent.models import Channel, localized_name, validate_names


class Journey(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        ACTIVE = "active", "Active"
        PAUSED = "paused", "Paused"
        ARCHIVED = "archived", "Archived"

    class Entry(models.TextChoices):
        ONCE = "once", "Once per customer, ever"
        ONCE_PER = "once_per", "At most once per N days"
        EVERY_TIME = "every_time", "Every time the trigger fires"

    class OnHold(models.TextChoices):
        DEFER = "defer", "Send when allowed (after quiet hours or once under the cap)"
        SKIP = "skip", "Skip the message if it cannot go within its time to live"

    key = models.SlugField(max_length=100, unique=True)
    name = models.CharField(max_length=200)
    #: The marketer's ``name`` is internal ("Shoes 60d A/B v2"); customers read this.
    customer_name = models.CharField(
        max_length=200,
        blank=True,
        default="",
        help_text="The series name customers read; empty: the name.",
    )
    customer_names = models.JSONField(
        default=dict,
        blank=True,
        help_text='The customer name per language: {"ja": "シューズの買い替えのお知らせ"}.',
        validators=[validate_names],
    )
    description = models.TextField(blank=True, default="")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.DRAFT)
    topic = models.ForeignKey(
        "consent.Topic",
        on_delete=models.PROTECT,
        related_name="journeys",
        help_text="What the customer consents to; sends are checked against it.",
    )
    priority = models.PositiveSmallIntegerField(
        default=5, help_text="0 (lowest) to 9 (highest); the dispatcher sends higher first."
    )
    entry = models.CharField(max_length=16, choices=Entry.choices, default=Entry.EVERY_TIME)
    entry_days = models.PositiveIntegerField(
        null=True, blank=True, help_text="N for 'at most once per N days'."
    )
    # The kinds and their labels are the trigger modules (``journeys.triggers.registry``);
    # validation refuses any other value before it is saved.
    trigger_kind = models.CharField(max_length=16, default="event")
    trigger = models.JSONField(
        default=dict,
        blank=True,
        help_text="Settings of the trigger (event name and filter, date source and offset, "
        "schedule, segment); edited through the admin form's fields.",
    )
    exit_events = models.JSONField(
        default=list,
        blank=True,
        help_text='Events that take the customer out at once, e.g. [{"event": '
        '"order.completed", "match": "sku"}] (match: the event property must equal the '
        "same key in the enrollment's context).",
    )
    goal_event = models.CharField(max_length=200, blank=True, default="")
    goal_within_hours = models.PositiveIntegerField(
        null=True, blank=True, help_text="Conversion window from entry; empty for no limit."
    )
    goal_exits = models.BooleanField(
        default=True, help_text="A customer who converts leaves the journey."
    )
    on_hold = models.CharField(max_length=8, choices=OnHold.choices, default=OnHold.DEFER)
    current_version = models.ForeignKey(
        "JourneyVersion",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text="The published definition new enrollments start on.",
    )
    #: The canvas's pending draft: a definition saved apart from what runs (the row and
    #: its Step rows, which the engine and the trigger sweeps read), possibly with
    #: problems; publishing applies it. Null: no pending changes.
    draft_definition = models.JSONField(null=True, blank=True)
    draft_saved_at = models.DateTimeField(null=True, blank=True)
    draft_saved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    #: Fingerprint of the running definition the pending draft was saved over; another
    #: write (the API's PUT, the form) changes it and the draft is then stale.
    draft_base = models.CharField(max_length=64, blank=True, default="", db_default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["key"]
        constraints = [
            models.CheckConstraint(
                condition=Q(priority__gte=0, priority__lte=9), name="journey_priority_range"
            ),
            models.CheckConstraint(
                condition=~Q(entry="once_per") | Q(entry_days__gte=1),
                name="journey_entry_days",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def customer_name_in(self, language: str | None = None) -> str:
        """The series name customers read in ``language`` (default: the active one)."""
        return localized_name(self.customer_names, self.customer_name or self.name, language)


class JourneyVersion(models.Model):
    """An immutable, published definition of a journey."""

    journey = models.ForeignKey(Journey, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    definition = models.JSONField()
    #: When it was published.
    created_at = models.DateTimeField(auto_now_add=True)
    #: The admin user who published it; empty for the API and the system.
    published_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    #: How it was published when not by an admin user: "API key <name>", "import"...
    published_via = models.CharField(max_length=200, blank=True, default="", db_default="")

    class Meta:
        ordering = ["journey_id", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["journey", "number"], name="journeyversion_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.journey_id} v{self.number}"


class StepKind(models.TextChoices):
    SEND = "send", "Send a message"
    DIGEST = "digest", "Send as a digest (collect, then send one)"
    WAIT = "wait", "Wait"
    WAIT_FOR_EVENT = "wait_for_event", "Wait for an event (with a timeout)"
    BRANCH = "branch", "Branch on a condition"
    SPLIT = "split", "Random split (A/B)"
    UPDATE_ATTRIBUTE = "update_attribute", "Update a customer attribute"
    WEBHOOK = "webhook", "Call a webhook"
    EXIT = "exit", "Exit"


#: Steps that send a message: a digest step sends one for everything it collected.
MESSAGE_KINDS = frozenset({StepKind.SEND, StepKind.DIGEST})


class Step(models.Model):
    """One step of a journey's draft. ``next`` and ``alt_next`` name other steps by key.

    ``alt_next`` is the second exit: the timeout of a wait-for-event, the "no" of a
    branch, the B arm of a split. Kind-specific settings live in ``config``, which the
    admin edits through plain form fields.
    """

    journey = models.ForeignKey(Journey, on_delete=models.CASCADE, related_name="steps")
    key = models.SlugField(max_length=50)
    position = models.PositiveIntegerField(default=0, help_text="The first step is the entry.")
    kind = models.CharField(max_length=20, choices=StepKind.choices)
    label = models.CharField(max_length=200, blank=True, default="")
    next = models.CharField(max_length=50, blank=True, default="")
    alt_next = models.CharField(max_length=50, blank=True, default="")
    config = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["journey_id", "position", "id"]
        constraints = [
            models.UniqueConstraint(fields=["journey", "key"], name="step_unique_key"),
        ]

    def __str__(self) -> str:
        return self.label or self.key


class Enrollment(models.Model):
    """One customer's trip through one journey, for one trigger occurrence."""

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        COMPLETED = "completed", "Completed"
        EXITED = "exited", "Exited"
        FAILED = "failed", "Failed"

    journey = models.ForeignKey(Journey, on_delete=models.CASCADE, related_name="enrollments")
    # RESTRICT: a version in use cannot go, unless its whole journey is being deleted.
    version = models.ForeignKey(JourneyVersion, on_delete=models.RESTRICT, related_name="+")
    customer = models.ForeignKey(
        "audience.Customer", on_delete=models.CASCADE, related_name="enrollments"
    )
    occurrence = models.CharField(
        max_length=200,
        help_text="What enrolled the customer (an event id, a date, a schedule time); "
        "unique per journey and customer, so a rerun never enrolls twice.",
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    step = models.CharField(max_length=50, blank=True, default="")
    due_at = models.DateTimeField(null=True, blank=True)
    waiting = models.BooleanField(
        default=False, help_text="Arrived at its current step (a wait) and waiting there."
    )
    waiting_for = models.CharField(
        max_length=200, blank=True, default="", help_text="Event name a wait-for-event expects."
    )
    context = models.JSONField(default=dict, blank=True)
    arm = models.CharField(max_length=50, blank=True, default="")
    entered_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    exit_reason = models.CharField(max_length=200, blank=True, default="")
    converted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["journey", "customer", "occurrence"], name="enrollment_unique_occurrence"
            ),
            models.CheckConstraint(
                condition=Q(status__in=["active", "completed", "exited", "failed"]),
                name="enrollment_status_valid",
            ),
        ]
        indexes = [
            # The engine's claim: active enrollments in due order.
            models.Index(
                fields=["due_at"], name="enrollment_due_idx", condition=Q(status="active")
            ),
            # Events find the customer's active enrollments (exit, goal, wait-for-event).
            models.Index(
                fields=["customer", "journey"],
                name="enrollment_customer_active_idx",
                condition=Q(status="active"),
            ),
            models.Index(
                fields=["journey", "customer", "-entered_at"], name="enrollment_entry_idx"
            ),
            # Failures are rare: a tiny index counts them per journey.
            models.Index(
                fields=["journey"],
                name="enrollment_failed_idx",
                condition=Q(status="failed"),
            ),
            # Analytics: who is at each step of a journey now, from the index alone.
            models.Index(
                fields=["journey", "step"],
                name="enrollment_active_step_idx",
                condition=Q(status="active"),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.journey_id}:{self.customer_id}:{self.occurrence}"


class StepRun(models.Model):
    """The log: one row each time an enrollment passes a step, with what happened."""

    enrollment = models.ForeignKey(Enrollment, on_delete=models.CASCADE, related_name="runs")
    journey = models.ForeignKey(Journey, on_delete=models.CASCADE, related_name="+")
    step = models.CharField(max_length=50)
    kind = models.CharField(max_length=20)
    outcome = models.CharField(max_length=50)
    detail = models.JSONField(default=dict, blank=True)
    message_id = models.BigIntegerField(null=True, blank=True)
    at = models.DateTimeField()

    class Meta:
        ordering = ["at", "id"]
        indexes = [
            models.Index(fields=["journey", "step"], name="steprun_journey_step_idx"),
            models.Index(fields=["enrollment", "at"], name="steprun_enrollment_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.enrollment_id} {self.step} {self.outcome}"


class SegmentMember(models.Model):
    """Who is in a segment-entry journey's segment, so that only entering it enrolls."""

    journey = models.ForeignKey(Journey, on_delete=models.CASCADE, related_name="+")
    customer = models.ForeignKey("audience.Customer", on_delete=models.CASCADE, related_name="+")
    since = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["journey", "customer"], name="segmentmember_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.journey_id}:{self.customer_id}"


class ReplenishmentState(models.Model):
    """Per customer and product: purchase history summarized, and the predicted re-purchase.

    Kept up to date incrementally from purchase events, so the daily sweep is a range
    scan on ``predicted_at`` instead of a pass over every purchase ever made.
    """

    journey = models.ForeignKey(Journey, on_delete=models.CASCADE, related_name="+")
    customer = models.ForeignKey("audience.Customer", on_delete=models.CASCADE, related_name="+")
    product = models.CharField(max_length=200)
    purchases = models.PositiveIntegerField()
    last_purchase_at = models.DateTimeField()
    median_interval_days = models.FloatField(null=True, blank=True)
    cycle_days = models.FloatField(help_text="The interval used: own median or the default.")
    basis = models.CharField(max_length=16, help_text="'own' (median) or 'default'.")
    predicted_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["journey", "customer", "product"], name="replenishment_unique"
            ),
        ]
        indexes = [
            models.Index(fields=["journey", "predicted_at"], name="replenishment_due_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.customer_id}:{self.product} due {self.predicted_at:%Y-%m-%d}"


class PendingEvent(models.Model):
    """Events recorded but not yet seen by the journeys (written with the event, in its
    transaction, and deleted when processed), so none is missed or handled twice."""

    event_id = models.BigIntegerField(primary_key=True)

    def __str__(self) -> str:
        return str(self.event_id)


class JourneyCursor(models.Model):
    """How far a sweep has read (events by id, schedules by time), per journey and sweep."""

    journey = models.ForeignKey(Journey, on_delete=models.CASCADE, related_name="+")
    name = models.CharField(max_length=50)
    last_id = models.BigIntegerField(default=0)
    last_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["journey", "name"], name="journeycursor_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.journey_id}:{self.name}"


# Keep the channel vocabulary importable from here for the definition module.
CHANNEL_CHOICES = [*Channel.choices, ("preferred", "Preferred (the customer's order)")]
