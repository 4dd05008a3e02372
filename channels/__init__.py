"""Channel adapters (a leaf: plain dataclasses in and out) and provider webhooks.

Not Django Channels: this package shadows the PyPI ``channels`` name, which we do not use.
"""
