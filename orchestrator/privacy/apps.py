from django.apps import AppConfig


class PrivacyConfig(AppConfig):
    name = "orchestrator.privacy"
    label = "privacy"
    verbose_name = "Privacy"
