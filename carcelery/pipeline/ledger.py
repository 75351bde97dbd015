"""Which images were already dispatched: the ledger table's image items (``store``'s schema), holding the ETag.

It is what makes a scan dispatch new (or changed) images only, and what keeps
a second run over the same bucket from paying for the same recognition again.
Reads and writes go in batches (100 and 25 items per request, DynamoDB's
limits): one request per image would make dispatching as slow as recognizing.
Two dispatchers racing over the same new image may both send it; the results
are idempotent, so that costs a recognition, not a wrong output.

An image announced by an S3 event is recorded with the event's ``sequencer``,
and a removed one stays as a mark (no ETag, the removal's sequencer): an event
older than what the ledger holds for its key, or the same one again, is
known as such (``entries``).
"""

from __future__ import annotations

from typing import Iterable

from .. import aws
from ..settings import settings
from .images import S3Image
from .model import RunId
from .store import LEDGER_KEY as KEY, image_key


def _key(image: S3Image) -> str:
    return image_key(image.bucket, image.key)


def _chunks(items: list, size: int) -> Iterable[list]:
    return (items[i:i + size] for i in range(0, len(items), size))


def entries(images: list[S3Image]) -> dict[str, dict[str, str]]:
    """What the ledger holds of ``images``, by "<bucket>/<key>": ``etag`` ("" once removed), ``sequencer`` ("" if none).

    Raises:
      botocore.exceptions.ClientError: the table is missing or not readable.
    """
    keys = [{KEY: {"S": k}} for k in sorted({_key(i) for i in images})]
    return {item[KEY]["S"]: {"etag": item["etag"]["S"], "sequencer": item.get("sequencer", {}).get("S", "")}
            for item in aws.batch_get(aws.client("dynamodb"), settings.ledger_table, keys)}


def dispatched(images: list[S3Image]) -> dict[str, str]:
    """The ETag each of ``images`` had when it was last dispatched, by "<bucket>/<key>"."""
    return {key: entry["etag"] for key, entry in entries(images).items()}


def new(images: list[S3Image], force: bool = False) -> list[S3Image]:
    """``images`` less those dispatched before with the same ETag (all of them if ``force``).

    Raises:
      botocore.exceptions.ClientError: the table is missing or not readable.
    """
    before = {} if force else dispatched(images)
    return [i for i in images if before.get(_key(i)) != i.etag]


def record(images: list[S3Image], run_id: RunId) -> None:
    """Record ``images`` as dispatched in run ``run_id``, once they are sent.

    Not before: a dispatcher that fails while sending leaves them new, for the
    next scan; one recorded but never sent would be skipped for good.

    Raises:
      botocore.exceptions.ClientError: the table is missing or not writable.
    """
    dynamodb = aws.client("dynamodb")
    for chunk in _chunks(images, aws.WRITE_BATCH):
        aws.batch_write(dynamodb, settings.ledger_table, [{"PutRequest": {"Item": _item(i, run_id)}} for i in chunk])


def removed(images: list[S3Image]) -> None:
    """Mark ``images`` removed from their bucket (each with its removal's sequencer): a scan or event finds them new.

    Raises:
      botocore.exceptions.ClientError: the table is missing or not writable.
    """
    record([S3Image(i.bucket, i.key, "", 0, i.sequencer) for i in images], "")


def _item(image: S3Image, run_id: RunId) -> dict:
    item = {KEY: {"S": _key(image)}, "etag": {"S": image.etag}, "run": {"S": run_id}}
    if image.sequencer:
        item["sequencer"] = {"S": image.sequencer}
    return item
