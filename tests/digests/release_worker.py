"""A preferences update in a process of its own, killed while it releases a digest.

``python -m tests.digests.release_worker '<json>'`` switches the customers the JSON
names (``database``, ``customers``, ``topic``) to "as it happens", each in its own
update, as the preference page would. Inside the update of the customer at
``stall_at`` (0-based), once the held messages are released but before it commits, it
prints ``releasing`` and stalls until it is killed.
"""

from __future__ import annotations

import json
import os
import sys
import threading


def main(argv: list[str]) -> None:
    config = json.loads(argv[1])
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orchestrator.settings")
    from django.conf import settings

    settings.DATABASES["default"]["NAME"] = config["database"]
    import django

    django.setup()
    from orchestrator.audience.models import Customer
    from orchestrator.consent.preferences import (
        preferences_changes_from_document,
        preferences_update,
    )
    from orchestrator.delivery import holds

    release = holds._release
    done = {"n": 0}

    def stalling_release(*args, **kwargs):
        release(*args, **kwargs)
        if done["n"] == config["stall_at"]:
            print("releasing", flush=True)
            threading.Event().wait()  # until SIGKILL

    holds._release = stalling_release
    changes = preferences_changes_from_document(
        {"digests": {config["topic"]: {"cadence": "immediate"}}}
    )
    for customer_id in config["customers"]:
        preferences_update(
            customer=Customer.objects.get(pk=customer_id),
            changes=changes,
            source="preference_center",
        )
        done["n"] += 1
    print("done", flush=True)


if __name__ == "__main__":
    main(sys.argv)
