from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "orchestrator.core"
    label = "core"
    verbose_name = "Platform"
