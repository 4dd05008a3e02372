from django.apps import AppConfig


class DevInboxConfig(AppConfig):
    name = "channels.devinbox"
    label = "devinbox"
    verbose_name = "Dev inbox"

    def ready(self) -> None:
        from channels.devinbox.privacy import devinbox_erase
        from orchestrator.audience import privacy

        privacy.privacy_eraser_add(devinbox_erase)
