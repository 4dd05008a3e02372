from django.apps import AppConfig


class DeliveryConfig(AppConfig):
    name = "orchestrator.delivery"
    label = "delivery"
    verbose_name = "Delivery"
