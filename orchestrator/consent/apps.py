from django.apps import AppConfig


class ConsentConfig(AppConfig):
    name = "orchestrator.consent"
    label = "consent"
    verbose_name = "Consent and preferences"
