"""Customers by the hash of each address, as suppressions store it.

A live count subtracts the suppressed members per channel. Hashing every member's
address to look it up costs a second on a million customers; with these indexes the
few suppressed addresses find their customers instead (``sql.reach_sql``). The function
is ``consent.models.address_hash`` in SQL (addresses are stored trimmed; ``btrim``).
"""

from django.db import migrations

#: (channel, customer column)
ADDRESSES = (("email", "email"), ("sms", "phone"), ("whatsapp", "whatsapp"), ("line", "line_user_id"))

FUNCTION = """
CREATE OR REPLACE FUNCTION segments_address_hash(channel text, address text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT encode(sha256(convert_to(channel || ':' || CASE WHEN channel = 'email'
        THEN lower(btrim(address)) ELSE btrim(address) END, 'UTF8')), 'hex')
$$
"""


class Migration(migrations.Migration):
    dependencies = [("segments", "0002_event_membership_index")]

    operations = [
        migrations.RunSQL(FUNCTION, "DROP FUNCTION IF EXISTS segments_address_hash(text, text)"),
        *(
            migrations.RunSQL(
                f"CREATE INDEX IF NOT EXISTS segments_{channel}_hash_idx ON audience_customer"
                f" (segments_address_hash('{channel}', {column})) WHERE {column} <> ''",
                f"DROP INDEX IF EXISTS segments_{channel}_hash_idx",
            )
            for channel, column in ADDRESSES
        ),
    ]
