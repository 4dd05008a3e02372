"""Scheduled triggers: the journeys that start from the clock rather than from one event.

Each kind is a set-based SQL sweep that ends in ``journeys.enrollment.enroll_select``:
dates (``date``), predicted re-purchases (``replenishment``), cron schedules for a
segment (``recurring``, beat-driven through ``schedules``) and segment entry
(``segment_entry``). ``segments`` compiles the condition vocabulary to SQL for all of
them. The Celery entry points are in ``tasks``.
"""
