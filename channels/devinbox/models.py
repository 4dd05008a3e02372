"""Messages delivered to the dev inbox instead of a real provider."""

from __future__ import annotations

from django.db import models


class InboxMessage(models.Model):
    channel = models.CharField(max_length=16, db_index=True)
    to_address = models.CharField(max_length=320)
    subject = models.CharField(max_length=500, blank=True, default="")
    body = models.TextField(blank=True, default="")
    html = models.TextField(blank=True, default="")
    headers = models.JSONField(default=dict, blank=True)
    meta = models.JSONField(default=dict, blank=True)
    provider_message_id = models.CharField(max_length=64, unique=True)
    message_ref = models.CharField(max_length=64, blank=True, default="", db_index=True)
    received_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-received_at", "-id"]

    def __str__(self) -> str:
        return f"{self.channel} to {self.to_address}"
