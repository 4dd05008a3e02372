from django.urls import path

from channels.webhooks import views
from channels.webhooks.providers import PROVIDERS

app_name = "webhooks"

urlpatterns = [
    path(route, views.receive, {"provider": name, "endpoint": endpoint}, name=url_name)
    for name, module in PROVIDERS.items()
    for url_name, (route, endpoint) in module.ENDPOINTS.items()
]
