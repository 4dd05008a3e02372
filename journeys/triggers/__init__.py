"""Trigger kinds: what starts a journey, one module each, listed in ``registry``.

``event`` (enrolled from events as they arrive), ``date``, ``replenishment`` (predicted
re-purchases), ``recurring`` (cron schedules for a segment, beat-driven through
``schedules``), ``segment_entry`` and ``manual``. Each validates its settings, sweeps
(a set-based SQL statement ending in ``journeys.enrollment.enroll_select``), forecasts
for the simulation and declares its builder fields. ``segments`` compiles the condition
vocabulary to SQL for them; the Celery entry points are in ``tasks``.
"""
