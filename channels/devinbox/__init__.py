"""The dev inbox: what the devinbox adapters "sent", shown as the customer would see it."""
