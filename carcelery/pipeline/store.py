"""What carcelery keeps in DynamoDB itself: the key schema of every item it writes, and a run's own items.

Two tables (provisioned by ``aws.provision`` and deploy/carcelery.yaml), string keys:

records (CARCELERY_RECORDS_TABLE), hash ``bucket``, range ``order``: one item per image
  bucket    the image's bucket
  order     ``order(key)``: its key, sorting as output.txt does (natural order), and its hash
  record    the image's ``model.Record``, as JSON
  run       the id of the run that wrote it ("" for a task sent outside a run)
  pending   true while the record is the dispatcher's ``pending`` one (``records.fail``'s condition)
  Written by the dispatcher (pending), the image tasks (their record), ``runs.fail_missing``
  (failed, if still pending), ``stream`` (deleted, image removed); read a bucket at a time
  (Query) by the terminator, or by key (BatchGetItem) for a run of S3 events. ``records``.

ledger (CARCELERY_LEDGER_TABLE), hash ``image``, TTL on ``ttl``:
  "<bucket>/<key>"          an image dispatched: ``etag`` ("" once removed), ``run``,
                            ``sequencer`` (of its S3 event, if one announced it); never expires.
                            Written by the dispatcher once sent; read by each listing. ``ledger``.
  "run:<run id>"            what the run's listing passed over, by reason: ``skipped`` (JSON);
                            ``ttl``: it expires with the run's results (CARCELERY_RESULT_EXPIRES).
                            Written by the dispatcher before the run's last part; read by its
                            terminator. ``note_skipped``, ``skipped``.
  The keys cannot meet: an S3 bucket's name holds no ":". (The ledger table also holds the
  output index's counters, "outputs:<bucket>/<prefix>": ``pipeline.index``'s, not the store's.)

Celery's result table (CARCELERY_RESULTS_TABLE) holds Celery's items and the chord's counts
(``carcelery.backend``); nothing of the store.
"""

from __future__ import annotations

import hashlib
import json
import re
import time

from .. import aws
from ..aws.tables import LEDGER, RECORDS
from ..settings import settings
from .model import RunId

RECORDS_HASH, RECORDS_RANGE = RECORDS.hash, RECORDS.range
LEDGER_KEY = LEDGER.hash
# The ledger's attribute DynamoDB's TTL reads (seconds since the epoch); an item without it stays.
EXPIRES = LEDGER.expiry
# DynamoDB's range keys stop at 1024 bytes; S3 keys may be as long.
ORDER_BYTES = 960


def order(key: str) -> str:
    """A string that sorts (as DynamoDB sorts: by UTF-8 bytes) as ``results.natural_key(key)`` does.

    Each text part, lowercased, ends with "\\x01", below every character of a
    key; each number is its digits after one character giving their count, so
    that 9 sorts before 10. The key's hash at the end keeps keys that sort
    alike (a.jpg, A.jpg) apart.
    """
    encoded = []
    for index, part in enumerate(re.split(r"(\d+)", key)):
        if index % 2:
            digits = str(int(part))
            encoded.append(chr(0x30 + len(digits)) + digits)
        else:
            encoded.append(part.lower() + "\x01")
    head = "".join(encoded).encode()[:ORDER_BYTES].decode(errors="ignore")
    return f"{head}\x01{hashlib.sha1(key.encode()).hexdigest()}"


def record_key(bucket: str, key: str) -> dict:
    """The records table's key of image ``key`` of ``bucket``."""
    return {RECORDS_HASH: {"S": bucket}, RECORDS_RANGE: {"S": order(key)}}


def image_key(bucket: str, key: str) -> str:
    """The ledger's key of image ``key`` of ``bucket``."""
    return f"{bucket}/{key}"


def run_key(run_id: RunId) -> dict:
    """The ledger's key of run ``run_id``'s item."""
    return {LEDGER_KEY: {"S": f"run:{run_id}"}}


def note_skipped(run_id: RunId, skipped: dict[str, int]) -> None:
    """Store what run ``run_id``'s listing passed over, by reason, for its terminator; nothing if nothing.

    Raises:
      botocore.exceptions.ClientError: the ledger table is missing or not writable.
    """
    if any(skipped.values()):
        aws.client("dynamodb").put_item(TableName=settings.ledger_table, Item={
            **run_key(run_id), "skipped": {"S": json.dumps(skipped, sort_keys=True)},
            EXPIRES: {"N": str(int(time.time() + settings.result_expires))}})


def skipped(run_id: RunId) -> dict[str, int]:
    """What run ``run_id``'s listing passed over, by reason (``note_skipped``); empty if nothing.

    Raises:
      botocore.exceptions.ClientError: the ledger table is missing or not readable.
    """
    item = aws.client("dynamodb").get_item(TableName=settings.ledger_table, Key=run_key(run_id),
                                           ConsistentRead=True).get("Item")
    return json.loads(item["skipped"]["S"]) if item else {}
