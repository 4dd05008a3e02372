from django.apps import AppConfig


class DeliveryConfig(AppConfig):
    name = "orchestrator.delivery"
    label = "delivery"
    verbose_name = "Delivery"

    def ready(self) -> None:
        # Messages held for a digest follow the customer's changed choice (consent sits
        # below delivery, so it tells us rather than calling us).
        # Same for the check of a topic's digest template, which is one of ours.
        from orchestrator.consent.models import digest_template_check_register
        from orchestrator.consent.preferences import digest_choices_subscribe
        from orchestrator.delivery.digests import digest_template_problem
        from orchestrator.delivery.holds import digests_follow_choices

        digest_choices_subscribe(digests_follow_choices)
        digest_template_check_register(digest_template_problem)
