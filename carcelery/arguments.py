"""The shapes of the pipeline's task messages: what a worker reads before it runs one.

``problem(headers, body)`` says why a task message of ``detect_car``,
``recognize_text``, ``terminate`` or ``watch_run`` cannot run, or None: its
headers (the ones Celery reads before the task), and its arguments against
the task's signature and the fields the task reads (a detect_car's ``ref``,
a recognize_text's detection record, a run: ``pipeline.model``'s shapes). The worker rejects such a
message (``carcelery.rejecting``): it goes to the dead-letter queue with
the reason, instead of failing in the task or, later, in the terminator that
reads what it stored. The checks have the tasks' signatures; a message of
another task is not checked here.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import Any

from .pipeline.model import Status
from .printable import json_kind, printable

NUMBER = (int, float)
# (type or types, required) per field; None: JSON null.
_REF = {"bucket": (str, True), "key": (str, True), "etag": ((str, type(None)), False),
        "run": ((str, type(None)), False)}
_BOX = {"left": (NUMBER, True), "top": (NUMBER, True), "width": (NUMBER, True), "height": (NUMBER, True)}
_LABEL = {"name": (str, True), "confidence": (NUMBER, True), "boxes": (list, True)}  # text_regions reads the boxes
# model.Record; "status" is not required: a record made before it existed is a detection, done.
_RECORD = {"image": (str, True), "bucket": (str, True), "key": (str, True), "etag": ((str, type(None)), False),
           "status": (str, False), "car": (bool, True), "car_confidence": (NUMBER, True),
           "threshold": (NUMBER, False), "labels": (list, True), "text": (list, False)}
# model.Run; "prefix" is not required: a run without one is of the whole bucket.
_RUN = {"id": (str, True), "bucket": (str, True), "prefix": (str, False), "keys": (list, False)}
# The headers Celery reads in the worker's main process, before the task.
_HEADERS = {"id": (str, True), "retries": (int, False), "eta": ((str, type(None)), False),
            "expires": ((str, type(None)), False), "root_id": ((str, type(None)), False),
            "parent_id": ((str, type(None)), False), "group": ((str, type(None)), False),
            "timelimit": ((list, type(None)), False)}
def _is(value: Any, types: type | tuple) -> bool:
    # JSON's true is no number (Python's bool is an int).
    return isinstance(value, types) and not (isinstance(value, bool) and bool not in
                                             (types if isinstance(types, tuple) else (types,)))


def _fields(value: Any, where: str, shape: dict) -> str | None:
    """Why ``value`` is not an object with ``shape``'s fields, or None."""
    if not isinstance(value, dict):
        return f"{where} is {json_kind(value)}, not an object"
    for field, (types, required) in shape.items():
        if field not in value:
            if required:
                return f"{where} has no {field}"
        elif not _is(value[field], types):
            return f"{where}.{field} is {json_kind(value[field])}"
    return None


def _each(values: list, where: str, check: Callable[[Any, str], str | None]) -> str | None:
    return next((p for n, v in enumerate(values) if (p := check(v, f"{where}[{n}]")) is not None), None)


def _label(label: Any, where: str) -> str | None:
    return _fields(label, where, _LABEL) or _each(label["boxes"], f"{where}.boxes",
                                                  lambda box, at: _fields(box, at, _BOX))


def _text(value: Any, where: str) -> str | None:
    return None if isinstance(value, str) else f"{where} is {json_kind(value)}, not a string"


def _optional_text(value: Any, where: str) -> str | None:
    return None if value is None else _text(value, where)


def _run(run: Any, where: str = "run") -> str | None:
    problem = _fields(run, where, _RUN)
    if problem is None and not re.fullmatch(r"[0-9a-f]{12}", run["id"]):
        return f"{where}.id is not 12 hex digits (runs are made by python -m carcelery.dispatch)"
    return problem or _each(run.get("keys", []), f"{where}.keys", _text)


def detect_car(ref):
    return _fields(ref, "ref", _REF)


def _detected(record: Any, where: str = "record") -> str | None:
    """Why ``record`` is not a detection recognize_text can read the text of, or None."""
    problem = _fields(record, where, _RECORD)
    if problem is None and record.get("status", Status.DONE) != Status.DONE:
        return f"{where}.status is {record['status']!r}, not 'done': only a detected image's text is read"
    return problem or _each(record["labels"], f"{where}.labels", _label)


def recognize_text(record, run=None):
    return _detected(record) or _optional_text(run, "run")


def terminate(run):
    return _run(run)


def watch_run(run, group_id, terminator_id, parts_seen=-1, since=None):
    return (_run(run) or _text(group_id, "group_id") or _text(terminator_id, "terminator_id")
            or (None if _is(parts_seen, int) else f"parts_seen is {json_kind(parts_seen)}, not a number")
            or (None if since is None or _is(since, NUMBER) else f"since is {json_kind(since)}, not a number"))


CHECKS: dict[str, Callable[..., str | None]] = {
    f"carcelery.tasks.{check.__name__}": check for check in (detect_car, recognize_text, terminate, watch_run)}


def problem(headers: dict, body: Any) -> str | None:
    """Why the task message of ``headers`` and decoded ``body`` (Celery's protocol 2) cannot run, or None."""
    name = headers.get("task")
    found = _fields(headers, "the headers", _HEADERS)
    if found is None and headers.get("timelimit") is not None and not (
            len(headers["timelimit"]) == 2 and all(t is None or _is(t, NUMBER) for t in headers["timelimit"])):
        found = "the headers.timelimit is not [soft, hard] seconds"
    if found is not None or name not in CHECKS:
        return found
    if not (isinstance(body, list) and len(body) == 3 and isinstance(body[0], list) and isinstance(body[1], dict)
            and isinstance(body[2], (dict, type(None)))):
        return f"the body is {json_kind(body)}, not Celery's [args, kwargs, embed]"
    check, (args, kwargs, _) = CHECKS[name], body
    try:
        inspect.signature(check).bind(*args, **kwargs)
    except TypeError as exc:
        return f"{name.rpartition('.')[2]}{inspect.signature(check)} cannot take these arguments: {exc}"
    found = check(*args, **kwargs)
    return None if found is None else printable(f"{name.rpartition('.')[2]}: {found}")
