"""A digest builder in a process of its own, for fault tests that kill it mid-build.

``python -m tests.faults.digest_worker '<json>'`` runs ``digests_build_due`` in a loop
on the database the JSON names (``database``, ``batch_size``), as beat's digest sweep
would. On batch ``stall_on_batch`` it prints ``building`` after the digest messages
are queued and the first digest is folded, still inside the batch's transaction, and
stalls there until it is killed. It prints ``ready`` once Django is set up.
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
    from orchestrator.delivery import digests

    batches = {"n": 0}
    claim, fold = digests._claim, digests._fold

    def counting_claim(limit, now):
        batches["n"] += 1
        return claim(limit, now)

    def stalling_fold(*args, **kwargs):
        fold(*args, **kwargs)
        if batches["n"] == config["stall_on_batch"]:
            print("building", flush=True)
            threading.Event().wait()  # until SIGKILL

    digests._claim = counting_claim
    digests._fold = stalling_fold
    print("ready", flush=True)
    digests.digests_build_due(batch_size=config["batch_size"], time_budget=60.0)
    print("done", flush=True)


if __name__ == "__main__":
    main(sys.argv)
