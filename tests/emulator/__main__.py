"""Run the provider emulator by hand: ``python -m tests.emulator [--port 8025]``."""

from __future__ import annotations

import argparse
import importlib
import time

from tests.emulator.server import ProviderEmulator

#: Provider modules with an ``install(emulator)`` function, where present.
PROVIDERS = ("tests.emulator.sendgrid", "tests.emulator.twilio", "tests.emulator.line")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8025)
    args = parser.parse_args()
    emulator = ProviderEmulator(port=args.port)
    installed = []
    # What each provider says about itself: its module's CAPABILITIES text, if any.
    notes = []
    for name in PROVIDERS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError:
            continue
        module.install(emulator)
        installed.append(name.rsplit(".", 1)[1])
        notes.append(getattr(module, "CAPABILITIES", ""))
    with emulator:
        print(f"provider emulator ({', '.join(installed) or 'no providers'}) on {emulator.url}")
        for note in filter(None, notes):
            print(note.replace("{url}", emulator.url))
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
