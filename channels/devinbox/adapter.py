"""An adapter that delivers into the dev inbox (``channels.devinbox``) instead of a provider.

The one adapter that touches a model, because its "provider" is our own table.
SMS gets its segment count and encoding recorded, as a real provider would bill it.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from channels.adapters.base import ChannelAdapter, OutboundMessage, SendResult
from channels.adapters.sms import segments


class DevInboxAdapter(ChannelAdapter):
    provider = "devinbox"

    def send_batch(self, batch: Sequence[OutboundMessage]) -> list[SendResult]:
        from channels.devinbox.models import InboxMessage

        rows = []
        for message in batch:
            meta = {"sender": message.sender, **message.metadata}
            if message.channel == "sms":
                meta["sms"] = segments(message.body).as_dict()
            rows.append(
                InboxMessage(
                    channel=message.channel,
                    to_address=message.to,
                    subject=message.subject,
                    body=message.body,
                    html=message.html,
                    headers=dict(message.headers),
                    meta=meta,
                    provider_message_id=str(uuid.uuid4()),
                    message_ref=str(message.message_id),
                )
            )
        InboxMessage.objects.bulk_create(rows)
        return [
            SendResult(
                message_id=row_message.message_id,
                accepted=True,
                provider_message_id=row.provider_message_id,
                detail=row.meta.get("sms", {}),
            )
            for row_message, row in zip(batch, rows, strict=True)
        ]
