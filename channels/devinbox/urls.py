"""Routes of /dev/inbox/."""

urlpatterns: list = []
