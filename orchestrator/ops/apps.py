from django.apps import AppConfig


class OpsConfig(AppConfig):
    name = "orchestrator.ops"
    label = "ops"
    verbose_name = "Operations"
