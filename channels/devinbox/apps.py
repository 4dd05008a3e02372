from django.apps import AppConfig


class DevInboxConfig(AppConfig):
    name = "channels.devinbox"
    label = "devinbox"
    verbose_name = "Dev inbox"
