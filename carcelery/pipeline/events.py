"""S3 event notifications, read: what an SQS message from S3 says happened to which objects.

S3 sends JSON (not a Celery message): ``{"Records": [...]}`` with, per
record, ``eventName`` (``ObjectCreated:Put``, ``ObjectRemoved:Delete``, ...)
and ``s3.object``: ``key`` URL-encoded with ``+`` for spaces, ``eTag`` and
``size`` (created only), ``sequencer``. When notifications are set it sends
``{"Event": "s3:TestEvent", ...}`` once, which says nothing about objects.
https://docs.aws.amazon.com/AmazonS3/latest/userguide/notification-content-structure.html
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote_plus

CREATED, REMOVED = "created", "removed"
TEST_EVENT = "s3:TestEvent"
# S3's rule: to compare two sequencers of one key, right-pad the shorter with
# zeros; stored padded to this width, they compare as strings.
SEQUENCER_WIDTH = 40


class NotAnEvent(ValueError):
    """A message on the events queue that is not an S3 event notification; the message says what is wrong."""


def sequence(sequencer: str) -> str:
    """``sequencer`` as it compares with another key's: upper case, right-padded with zeros."""
    return sequencer.upper().ljust(SEQUENCER_WIDTH, "0")


def _object_event(record: Any) -> dict:
    try:
        name, obj = record["eventName"], record["s3"]["object"]
        bucket, key = record["s3"]["bucket"]["name"], unquote_plus(obj["key"])
    except (KeyError, TypeError):
        raise NotAnEvent("a record without eventName, s3.bucket.name or s3.object.key") from None
    if name.startswith("ObjectCreated:"):
        kind = CREATED
    elif name.startswith("ObjectRemoved:"):
        kind = REMOVED
    else:
        raise NotAnEvent(f"event {name!r} is neither ObjectCreated nor ObjectRemoved "
                         f"(provision --events asks for those only)")
    return {"kind": kind, "bucket": bucket, "key": key, "etag": str(obj.get("eTag", "")).strip('"'),
            "size": int(obj.get("size", 0) or 0), "sequencer": sequence(str(obj.get("sequencer", "")))}


def parse(body: str | bytes | dict) -> list[dict]:
    """The object events of one message's ``body``, as plain data; none for S3's test event.

    Each event: ``kind`` (CREATED or REMOVED), ``bucket``, ``key`` (decoded),
    ``etag`` and ``size`` (empty for a removal), ``sequencer`` (``sequence``'s form).

    Raises:
      NotAnEvent: the body is not JSON, or not an S3 event notification.
    """
    if isinstance(body, (bytes, bytearray)):
        body = body.decode("utf-8", errors="replace")
    if isinstance(body, str):
        try:
            body = json.loads(body)
        except ValueError:
            raise NotAnEvent(f"not JSON: {body[:80]!r}") from None
    if not isinstance(body, dict):
        raise NotAnEvent(f"not a JSON object: {str(body)[:80]!r}")
    if body.get("Event") == TEST_EVENT:
        return []
    records = body.get("Records")
    if not isinstance(records, list) or not records:
        raise NotAnEvent(f"no Records: keys {sorted(body)[:10]}")
    return [_object_event(record) for record in records]


def latest(events: list[dict]) -> list[dict]:
    """Of each (bucket, key)'s events, the one with the greatest sequencer, in the order they first came."""
    kept: dict[tuple[str, str], dict] = {}
    for event in events:
        where = (event["bucket"], event["key"])
        if where not in kept or event["sequencer"] > kept[where]["sequencer"]:
            kept[where] = event
    return list(kept.values())
