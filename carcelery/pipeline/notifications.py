"""S3 event notifications, read: what an SQS message from S3 says happened to which objects.

S3 sends JSON (not a Celery message): ``{"Records": [...]}`` with, per
record, ``eventName`` (``ObjectCreated:Put``, ``ObjectRemoved:Delete``, ...)
and ``s3.object``: ``key`` URL-encoded with ``+`` for spaces, ``eTag`` and
``size`` (created only), ``sequencer``. When notifications are set it sends
``{"Event": "s3:TestEvent", ...}`` once, which says nothing about objects.
https://docs.aws.amazon.com/AmazonS3/latest/userguide/notification-content-structure.html

Anyone allowed to send to the queue may send anything: every field is checked
for its type, and what is not an S3 event is a ``NotAnEvent`` naming the field
and what it held, never another exception.
"""

from __future__ import annotations

import json
import re
import reprlib
from typing import Any, NamedTuple
from urllib.parse import quote_plus, unquote_plus

CREATED, REMOVED = "created", "removed"
TEST_EVENT = "s3:TestEvent"
# S3's rule: to compare two sequencers of one key, right-pad the shorter with
# zeros; stored padded to this width, they compare as strings.
SEQUENCER_WIDTH = 40
_HEX = re.compile(r"[0-9A-Fa-f]+")
# A reason names at most this many of a message's bad records.
REASONS_SHOWN = 10
# What a reason shows of a value: bounded in length and depth, whatever came.
_shown = reprlib.Repr()
_shown.maxstring, _shown.maxother, _shown.maxlevel = 60, 60, 2


class NotAnEvent(ValueError):
    """A message on the events queue, or one record of it, that is not an S3 object event; says what is wrong."""


class Parsed(NamedTuple):
    """One message read: the object events of its good records, and why each other record is not one."""

    events: list[dict]
    rejected: list[NotAnEvent]


def sequence(sequencer: str) -> str:
    """``sequencer`` as it compares with another key's: upper case, right-padded with zeros."""
    return sequencer.upper().ljust(SEQUENCER_WIDTH, "0")


def _at(value: Any, path: str) -> Any:
    """The field at dotted ``path`` of ``value``, through JSON objects only."""
    for depth, name in enumerate(path.split(".")):
        if not isinstance(value, dict):
            where = ".".join(path.split(".")[:depth]) or "the record"
            raise NotAnEvent(f"{where} is {_shown.repr(value)}, not an object")
        if name not in value:
            raise NotAnEvent(f"no {path}")
        value = value[name]
    return value


def _text(value: Any, path: str) -> str:
    if not isinstance(value, str) or not value:
        raise NotAnEvent(f"{path} is {_shown.repr(value)}, not a non-empty string")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise NotAnEvent(f"{path} is {_shown.repr(value)}, not valid Unicode (a lone surrogate)") from None
    return value


def _object_event(record: Any) -> dict:
    name = _text(_at(record, "eventName"), "eventName")
    if name.startswith("ObjectCreated:"):
        kind = CREATED
    elif name.startswith("ObjectRemoved:"):
        kind = REMOVED
    else:
        raise NotAnEvent(f"event {_shown.repr(name)} is neither ObjectCreated nor ObjectRemoved "
                         f"(provision --events asks for those only)")
    bucket = _text(_at(record, "s3.bucket.name"), "s3.bucket.name")
    key = unquote_plus(_text(_at(record, "s3.object.key"), "s3.object.key"))
    sequencer = _text(_at(record, "s3.object.sequencer"), "s3.object.sequencer")
    if len(sequencer) > SEQUENCER_WIDTH or not _HEX.fullmatch(sequencer):
        raise NotAnEvent(f"s3.object.sequencer is {_shown.repr(sequencer)}, "
                         f"not up to {SEQUENCER_WIDTH} hexadecimal digits")
    obj = record["s3"]["object"]
    etag, size = obj.get("eTag", ""), obj.get("size", 0)
    if not isinstance(etag, str):
        raise NotAnEvent(f"s3.object.eTag is {_shown.repr(etag)}, not a string")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise NotAnEvent(f"s3.object.size is {_shown.repr(size)}, not a whole number of bytes")
    return {"kind": kind, "name": name, "bucket": bucket, "key": key, "etag": etag.strip('"'), "size": size,
            "sequencer": sequence(sequencer)}


def parse(body: str | bytes | dict) -> Parsed:
    """The object events of one message's ``body``, as plain data; none for S3's test event.

    Each event: ``kind`` (CREATED or REMOVED), ``name`` (S3's ``eventName``),
    ``bucket``, ``key`` (decoded), ``etag`` and ``size`` (empty for a removal),
    ``sequencer`` (``sequence``'s form). A record that is not an object event is
    left out, its reason in ``rejected`` ("record 2: no s3.object.key").

    Raises:
      NotAnEvent: the body is not JSON, not a JSON object, or holds no records.
    """
    if isinstance(body, (bytes, bytearray)):
        body = body.decode("utf-8", errors="replace")
    if isinstance(body, str):
        try:
            body = json.loads(body)
        except ValueError:
            raise NotAnEvent(f"not JSON: {_shown.repr(body)}") from None
        except RecursionError:
            raise NotAnEvent("JSON nested too deep to read (S3's events are 5 levels deep)") from None
    if not isinstance(body, dict):
        raise NotAnEvent(f"not a JSON object: {_shown.repr(body)}")
    if body.get("Event") == TEST_EVENT:
        return Parsed([], [])
    records = body.get("Records")
    if not isinstance(records, list) or not records:
        raise NotAnEvent(f"no Records: keys {_shown.repr(sorted(map(str, body))[:10])}")
    found, rejected = [], []
    for index, record in enumerate(records):
        try:
            found.append(_object_event(record))
        except NotAnEvent as exc:
            rejected.append(NotAnEvent(f"record {index}: {exc}"))
    return Parsed(found, rejected)


def why(rejected: list[NotAnEvent]) -> str:
    """One line of the reasons of ``rejected`` (the first REASONS_SHOWN), for the dead-letter queue."""
    shown = "; ".join(str(r) for r in rejected[:REASONS_SHOWN])
    return shown + (f"; and {len(rejected) - REASONS_SHOWN} more" if len(rejected) > REASONS_SHOWN else "")


def notification(batch: list[dict]) -> dict:
    """``batch`` (``parse``'s events) as S3 sends them: ``parse`` of it gives ``batch`` back."""
    return {"Records": [{"eventName": e["name"], "s3": {"bucket": {"name": e["bucket"]}, "object": {
        "key": quote_plus(e["key"]), "eTag": e["etag"], "size": e["size"], "sequencer": e["sequencer"]}}}
        for e in batch]}


def latest(events: list[dict]) -> list[dict]:
    """Of each (bucket, key)'s events, the one with the greatest sequencer, in the order they first came."""
    kept: dict[tuple[str, str], dict] = {}
    for event in events:
        where = (event["bucket"], event["key"])
        if where not in kept or event["sequencer"] > kept[where]["sequencer"]:
            kept[where] = event
    return list(kept.values())
