"""A broadcast expansion worker in a process of its own, for fault tests that kill it
mid-expansion.

``python -m tests.faults.broadcast_worker '<json>'`` runs ``broadcasts_expand`` in a
loop on the database the JSON names (``database``, ``slice``), as the expansion task
and its re-kicks would, with the clock at ``now`` (ticking). On slice
``stall_on_slice`` it prints ``expanding`` once the slice's messages and history rows
are written, still inside the slice's transaction, and stalls there until it is
killed. It prints ``ready`` once Django is set up and ``done`` when nothing is left.
"""

from __future__ import annotations

import datetime as dt
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
    import time_machine

    from orchestrator.broadcasts import materialise, services
    from orchestrator.delivery import services as delivery_services

    materialise.SLICE = config["slice"]
    services.OUTBOX_HIGH_WATER = 10**9
    slices = {"n": 0}

    def stalling_kick(**_kick) -> None:
        # Called inside the slice's transaction, after its one statement wrote the copies.
        slices["n"] += 1
        if slices["n"] == config.get("stall_on_slice"):
            print("expanding", flush=True)
            threading.Event().wait()  # until SIGKILL

    delivery_services.kick_dispatcher = stalling_kick
    print("ready", flush=True)
    with time_machine.travel(dt.datetime.fromisoformat(config["now"]), tick=True):
        while services.broadcasts_expand()["messages"]:
            pass
    print("done", flush=True)


if __name__ == "__main__":
    main(sys.argv)
