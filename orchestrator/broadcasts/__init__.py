"""Broadcasts: one message to a whole audience (a saved segment or a topic's subscribers),
materialised into the outbox set-based and sent by the same dispatcher and policy."""
