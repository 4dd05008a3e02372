from django.apps import AppConfig


class JourneysConfig(AppConfig):
    name = "journeys"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from journeys import events
        from journeys import privacy as journeys_privacy
        from journeys import timeline as journeys_timeline
        from orchestrator.audience import privacy, services, timeline

        services.event_listener_add(events.events_recorded)
        privacy.privacy_exporter_add("journeys", journeys_privacy.journeys_export)
        privacy.privacy_eraser_add(journeys_privacy.journeys_erase)
        timeline.timeline_source_add(journeys_timeline.journeys_timeline)
