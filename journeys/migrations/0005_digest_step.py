"""The digest becomes a step of its own.

A send step with ``config.digest`` (window_minutes / count / key) becomes a ``digest``
step whose config holds those settings next to the template and channel. Both the
drafts (Step rows) and the published versions change, so enrollments already on a
version carry on through the same digest.
"""

from django.db import migrations, models

DIGEST_FIELDS = ("window_minutes", "count", "key")


def _to_digest_step(kind, config):
    config = dict(config or {})
    if kind != "send" or not config.get("digest"):
        return kind, config
    digest = config.pop("digest")
    config.update({k: digest[k] for k in DIGEST_FIELDS if digest.get(k) not in (None, "")})
    return "digest", config


def _to_send_step(kind, config):
    config = dict(config or {})
    if kind != "digest":
        return kind, config
    digest = {k: config.pop(k) for k in DIGEST_FIELDS if k in config}
    return "send", {**config, "digest": digest}


def _convert(apps, change):
    Step = apps.get_model("journeys", "Step")
    for step in Step.objects.filter(kind="digest" if change is _to_send_step else "send"):
        kind, config = change(step.kind, step.config)
        if (kind, config) != (step.kind, step.config):
            step.kind, step.config = kind, config
            step.save(update_fields=["kind", "config"])
    JourneyVersion = apps.get_model("journeys", "JourneyVersion")
    for version in JourneyVersion.objects.all():
        steps = version.definition.get("steps") or []
        changed = []
        for s in steps:
            kind, config = change(s.get("kind"), s.get("config"))
            changed.append({**s, "kind": kind, "config": config})
        if changed != steps:
            version.definition = {**version.definition, "steps": changed}
            version.save(update_fields=["definition"])


def forwards(apps, schema_editor):
    _convert(apps, _to_digest_step)


def backwards(apps, schema_editor):
    _convert(apps, _to_send_step)


class Migration(migrations.Migration):
    dependencies = [
        ("journeys", "0004_journey_customer_names"),
    ]

    operations = [
        migrations.AlterField(
            model_name="step",
            name="kind",
            field=models.CharField(
                choices=[
                    ("send", "Send a message"),
                    ("digest", "Send as a digest (collect, then send one)"),
                    ("wait", "Wait"),
                    ("wait_for_event", "Wait for an event (with a timeout)"),
                    ("branch", "Branch on a condition"),
                    ("split", "Random split (A/B)"),
                    ("update_attribute", "Update a customer attribute"),
                    ("webhook", "Call a webhook"),
                    ("exit", "Exit"),
                ],
                max_length=20,
            ),
        ),
        migrations.RunPython(forwards, backwards),
    ]
