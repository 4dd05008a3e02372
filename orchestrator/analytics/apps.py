from django.apps import AppConfig


class AnalyticsConfig(AppConfig):
    name = "orchestrator.analytics"
    label = "analytics"
    verbose_name = "Analytics"
