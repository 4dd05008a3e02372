from django.apps import AppConfig


class JourneysConfig(AppConfig):
    name = "journeys"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from journeys import events
        from orchestrator.audience import services

        services.event_listener_add(events.events_recorded)
