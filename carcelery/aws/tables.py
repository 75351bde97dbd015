"""The DynamoDB tables carcelery makes: each one's key schema and expiry attribute.

``provision`` creates the tables from these (deploy/carcelery.yaml declares the
same), and the modules that read and write their items address them by these
names (``carcelery.pipeline.ledger``, ``carcelery.pipeline.records``). The
tables' names are settings (``CARCELERY_*_TABLE``).
"""

from __future__ import annotations

from typing import NamedTuple


class Table(NamedTuple):
    """A table's string hash key, its string range key, and the attribute DynamoDB's TTL reads ("": none)."""

    hash: str
    range: str = ""
    expiry: str = ""


# Which images were dispatched, one item per image keyed "<bucket>/<key>", and runs' items (pipeline.store).
LEDGER = Table("image", expiry="ttl")
# Every image's record: by bucket, in the object keys' natural order.
RECORDS = Table("bucket", "order")
# Celery's result backend's (DynamoDBBackend): its key, and the attribute of its _ttl_field.
RESULTS = Table("id", expiry="ttl")
