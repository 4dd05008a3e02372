from django.apps import AppConfig


class SegmentsConfig(AppConfig):
    name = "orchestrator.segments"
    label = "segments"
    verbose_name = "Segments"
    default_auto_field = "django.db.models.BigAutoField"
