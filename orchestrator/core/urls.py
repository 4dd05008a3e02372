"""Operational routes (health)."""

urlpatterns: list = []
