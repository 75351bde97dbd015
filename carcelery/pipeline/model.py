"""The pipeline's shapes: an image's ``Record``, the ``Ref`` a detect_car gets, the ``Run`` a terminator gets.

They are JSON objects, typed here as ``TypedDict``: they travel in task
messages (Celery's JSON serializer), are kept as JSON in the records table
(``store``) and written to results.jsonl. ``carcelery.arguments`` checks the
messages against these shapes before a task runs.

A record's ``status`` says where the image is:

- ``done``: recognized; ``car`` is the detection's decision (true or false),
  ``text`` its lines (a car's, empty otherwise).
- ``failed``: ``error`` says at which ``Stage`` and why. ``car`` is the
  decision if the detection made one (an image that failed at ``text`` is a
  car whose text could not be read), null if not.
- ``pending``: sent, no result yet (the dispatcher stores one per image
  before it sends the image's task); ``car`` is null.

``record(value)`` reads a record kept before ``status`` existed (a pending
image was then a failure at stage ``pending``), and is how every reader
(``store.records``, ``results.read_records``) takes one in.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Mapping, NotRequired, TypedDict, cast

# A run's id: 12 hex digits, made by the dispatcher (``dispatch``); it names the run's folder.
RunId = str
# A Record as its readers get it (``records.read``, ``get``, ``with_runs``; ``results.read_records``):
# ``record``'s, typed as the dicts their callers index.
Stored = dict[str, Any]


class Status(StrEnum):
    DONE = "done"
    FAILED = "failed"
    PENDING = "pending"


class Stage(StrEnum):
    """Where an image failed."""
    DETECT = "detect"        # detect_car: the image could not be read, or the recognizer refused it
    TEXT = "text"            # recognize_text, or the hand-off to it
    RESULT = "result"        # its run ended without its result (``runs.fail_missing``)
    RECOGNIZE = "recognize"  # python -m carcelery.commands.recognize, outside the pipeline


class Box(TypedDict):
    left: float
    top: float
    width: float
    height: float


class Label(TypedDict):
    name: str
    confidence: float
    boxes: list[Box]


class Line(TypedDict):
    text: str
    confidence: float
    box: Box | None


class Failure(TypedDict):
    stage: Stage
    reason: str


class Record(TypedDict):
    """``bucket`` and ``key``: where the image is in S3; a local file's (``commands.recognize``) has bucket "" and its name.

    ``etag``: the object's when it was listed; the pipeline's builders always set it (null if not known).
    """
    image: str
    bucket: str
    key: str
    etag: NotRequired[str | None]
    status: Status
    car: bool | None
    car_confidence: float
    threshold: NotRequired[float]
    labels: list[Label]
    text: list[Line]
    error: NotRequired[Failure]


class Ref(TypedDict):
    """A detect_car's argument: the image, and the run (its id) that sent it."""
    bucket: str
    key: str
    etag: NotRequired[str | None]
    run: NotRequired[RunId | None]


class Run(TypedDict):
    """A run, as its terminator and its watch_run get it.

    ``prefix``: its keys' ("" if none). ``keys``: a run of S3 events names the
    keys whose records it changed (the terminator updates the outputs with them
    alone); a run without ``keys`` is one of the whole bucket under ``prefix``.
    """
    id: RunId
    bucket: str
    prefix: NotRequired[str]
    keys: NotRequired[list[str]]


_LEGACY_PENDING = "pending"  # the stage of a pending image, in records kept before ``status``


def record(value: Mapping[str, Any]) -> Record:
    """The record that JSON object ``value`` (from the records table, results.jsonl, a message) holds.

    One kept before ``status`` existed gets the status it stood for; anything
    else is taken as it is (the writer made it a ``Record``).
    """
    if "status" in value:
        return cast(Record, dict(value))
    got = dict(value)
    error = got.get("error")
    if error is None:
        got["status"] = Status.DONE
    elif error.get("stage") == _LEGACY_PENDING:
        del got["error"]
        got.update(status=Status.PENDING, car=None)
    else:
        got["status"] = Status.FAILED
    return cast(Record, got)

