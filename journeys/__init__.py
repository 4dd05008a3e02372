"""Customer journeys: triggers, enrollments and the step engine."""
