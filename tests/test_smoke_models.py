import pytest
from django.db import IntegrityError, transaction

from orchestrator.audience.models import Customer
from orchestrator.consent.models import ConsentRecord

pytestmark = pytest.mark.django_db


def test_consent_ledger_refuses_updates_at_the_database():
    customer = Customer.objects.create(external_id="alex")
    record = ConsentRecord.objects.create(customer=customer, action="opt_in", source="api")
    with pytest.raises(IntegrityError), transaction.atomic():
        ConsentRecord.objects.filter(pk=record.pk).update(source="admin")
    with pytest.raises(ValueError):
        record.save()
