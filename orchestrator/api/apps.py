from django.apps import AppConfig


class ApiConfig(AppConfig):
    name = "orchestrator.api"
    label = "api"
    verbose_name = "API"
