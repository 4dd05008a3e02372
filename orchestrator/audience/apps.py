from django.apps import AppConfig


class AudienceConfig(AppConfig):
    name = "orchestrator.audience"
    label = "audience"
    verbose_name = "Audience"
