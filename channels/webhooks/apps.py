from django.apps import AppConfig


class WebhooksConfig(AppConfig):
    name = "channels.webhooks"
    label = "webhooks"
    verbose_name = "Provider webhooks"
