"""Admin site branding: the marketer sees the brand, not "Django administration"."""

from django.conf import settings
from django.contrib import admin

admin.site.site_header = f"{settings.BRAND_NAME} · messaging"
admin.site.site_title = f"{settings.BRAND_NAME} messaging"
admin.site.index_title = "Customers, consent, templates and messages"
