"""The customer admin's Export data and Erase buttons."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse

from orchestrator.audience.models import Customer
from orchestrator.consent.models import Suppression, address_hash
from tests.delivery.factories import make_customer

pytestmark = pytest.mark.django_db


@pytest.fixture
def noa(db):
    return make_customer("noa", email="noa@example.com", phone="+14155550142")


def test_the_change_page_has_both_buttons(admin_client, noa):
    page = admin_client.get(reverse("admin:audience_customer_change", args=[noa.pk]))

    assert page.status_code == 200
    html = page.content.decode()
    assert reverse("admin:audience_customer_export", args=[noa.pk]) in html
    assert reverse("admin:audience_customer_erase", args=[noa.pk]) in html


def test_export_downloads_the_json(admin_client, noa):
    response = admin_client.get(reverse("admin:audience_customer_export", args=[noa.pk]))

    assert response.status_code == 200
    assert response["Content-Disposition"] == 'attachment; filename="customer-noa.json"'
    data = json.loads(response.content)
    assert data["customer"]["email"] == "noa@example.com"
    assert "journeys" in data and "webhooks" in data


def test_erase_asks_first_and_erases_only_on_post(admin_client, noa):
    url = reverse("admin:audience_customer_erase", args=[noa.pk])

    page = admin_client.get(url)
    assert page.status_code == 200
    assert b"cannot be undone" in page.content
    assert Customer.objects.filter(pk=noa.pk).exists()

    response = admin_client.post(url, follow=True)

    assert response.redirect_chain[-1][0] == reverse("admin:audience_customer_changelist")
    assert b"Erased customer" in response.content
    assert not Customer.objects.filter(pk=noa.pk).exists()
    assert Suppression.objects.filter(
        channel="email", address_hash=address_hash("email", "noa@example.com"), reason="erased"
    ).exists()


def test_erase_needs_the_csrf_token(noa):
    user = get_user_model().objects.create_superuser("dpo2", "d@example.com", "pw-dpo-12345")
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)

    response = client.post(reverse("admin:audience_customer_erase", args=[noa.pk]))

    assert response.status_code == 403
    assert Customer.objects.filter(pk=noa.pk).exists()


def test_erase_needs_the_delete_permission(client, noa):
    user = get_user_model().objects.create_user("clerk", "c@example.com", "pw-clerk-12345")
    user.is_staff = True
    user.save()
    user.user_permissions.add(
        Permission.objects.get(codename="view_customer"),
        Permission.objects.get(codename="change_customer"),
    )
    client.force_login(user)

    page = client.get(reverse("admin:audience_customer_change", args=[noa.pk]))
    assert reverse("admin:audience_customer_erase", args=[noa.pk]) not in page.content.decode()
    response = client.post(reverse("admin:audience_customer_erase", args=[noa.pk]))

    assert response.status_code == 403
    assert Customer.objects.filter(pk=noa.pk).exists()


def test_plain_delete_leads_to_erasure_and_bulk_delete_is_gone(admin_client, noa):
    response = admin_client.get(reverse("admin:audience_customer_delete", args=[noa.pk]))
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:audience_customer_erase", args=[noa.pk])

    changelist = admin_client.get(reverse("admin:audience_customer_changelist"))
    assert b"delete_selected" not in changelist.content


def test_erasing_twice_from_two_tabs_says_it_is_done(admin_client, noa):
    url = reverse("admin:audience_customer_erase", args=[noa.pk])
    admin_client.post(url)

    assert admin_client.post(url).status_code == 404
