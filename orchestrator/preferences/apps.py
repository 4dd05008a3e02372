from django.apps import AppConfig


class PreferencesConfig(AppConfig):
    name = "orchestrator.preferences"
    label = "preferences"
    verbose_name = "Preference center"
