"""A dispatch worker in a process of its own, for fault tests that kill it.

``python -m tests.faults.dispatch_worker '<json>'`` runs ``dispatch_due`` in a loop on
the database and with the settings the JSON names (``database``, ``settings``), as a
Celery worker's ``delivery.dispatch`` would, until it is killed. It prints ``ready``
once Django is set up.
"""

from __future__ import annotations

import json
import os
import sys
import time


def main(argv: list[str]) -> None:
    config = json.loads(argv[1])
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orchestrator.settings")
    from django.conf import settings

    # The test's database (pytest-django's test_... copy), before any connection opens.
    settings.DATABASES["default"]["NAME"] = config["database"]
    for name, value in config.get("settings", {}).items():
        setattr(settings, name, value)

    import django

    django.setup()
    from orchestrator.delivery import dispatcher

    print("ready", flush=True)
    while True:
        stats, _more = dispatcher.dispatch_due(time_budget=5.0)
        if not stats.claimed:
            time.sleep(0.02)


if __name__ == "__main__":
    main(sys.argv)
