from django.apps import AppConfig


class WebhooksConfig(AppConfig):
    name = "channels.webhooks"
    label = "webhooks"
    verbose_name = "Provider webhooks"

    def ready(self) -> None:
        from channels.webhooks import privacy as webhooks_privacy
        from orchestrator.audience import privacy

        privacy.privacy_exporter_add("webhooks", webhooks_privacy.webhooks_export)
        privacy.privacy_eraser_add(webhooks_privacy.webhooks_erase)
