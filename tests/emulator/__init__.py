"""A local, wire-level emulator of the messaging providers (SendGrid, Twilio, LINE).

The real provider SDKs are pointed at it through each adapter's base-URL option.
It validates requests as the real APIs do, answers with their real response
shapes and error codes, and injects faults on demand. Run it by hand with
``python -m tests.emulator``.
"""

from tests.emulator.server import Fault, ProviderEmulator, Received, wait_until

__all__ = ["Fault", "ProviderEmulator", "Received", "wait_until"]
