"""Test hook: AWS faults injected into the emulator's answers, for tests and ``bench/fault_matrix.py`` only.

The emulator wraps its application in ``Injector`` only when
CARCELERY_EMULATOR_FAULTS names a rules file; nothing else reads it. Every
process talking to the emulator (workers, dispatcher, the test itself, kombu's
pycurl receives included) meets the faults as it would meet AWS's: the same
status, error code and message, which botocore and the code above it then
retry, or not.

The rules file is a JSON list, read again whenever it changes::

    [{"call": "sqs:SendMessage", "match": "carcelery-text", "fault": "denied", "times": null, "skip": 0}]

- ``call``: ``service:Operation``, the request's signing service and API operation
  (``s3:GetObject``, ``s3:ListObjectsV2``, ``dynamodb:TransactWriteItems``, ``rekognition:DetectText``).
- ``match``: a string, or a list of strings, that the request's path, query or
  body must hold (a bucket, key, queue or table name; for SQS sends, the
  messages' decoded bodies too: a task's name, its arguments), so that a rule
  touches one test's requests only.
- ``fault``: ``transient`` (500 InternalError), ``throttle`` (SlowDown,
  ThrottlingException, RequestThrottled), ``denied`` (AccessDenied, naming the
  IAM action as AWS does) or ``delay`` (the answer comes ``seconds`` late, or
  as soon as the rules file no longer holds the rule: a test releases a request
  it holds by writing the rules again; with ``then``, one of the others, that
  fault comes then instead of the answer).
- ``skip`` matching requests go through first; then ``times`` of them get the
  fault (null: every one).

How many requests each rule faulted is written beside the rules, in ``<file>.hits``
(a JSON list, a count per rule), so that a test can tell a call retried from one
that was not.
"""

from __future__ import annotations

import base64
import io
import json
import re
import threading
import time
import uuid
from pathlib import Path
from typing import Callable, Iterable

FAULTS = ("transient", "throttle", "denied", "delay")
# The IAM action of an API operation, where they differ.
_IAM_ACTIONS = {"s3:ListObjectsV2": "s3:ListBucket", "s3:ListObjects": "s3:ListBucket", "s3:HeadBucket": "s3:ListBucket",
                "s3:HeadObject": "s3:GetObject"}
# Protocol of each service's answers.
_JSON = {"dynamodb", "rekognition", "sqs"}
_CODES = {  # fault: (status, code) per service; "*" for the others
    "transient": {"*": (500, "InternalError"), "dynamodb": (500, "InternalServerError"),
                  "rekognition": (500, "InternalServerError")},
    "throttle": {"s3": (503, "SlowDown"), "sqs": (400, "RequestThrottled"), "*": (400, "ThrottlingException")},
    "denied": {"s3": (403, "AccessDenied"), "sqs": (400, "AccessDenied"), "sns": (403, "AuthorizationError"),
               "*": (400, "AccessDeniedException")},
}


def write_rules(path: Path, rules: Iterable[dict]) -> None:
    """Replace the rules in ``path`` (and forget the counts of the old ones)."""
    rules = list(rules)
    for rule in rules:
        if rule.get("fault") not in FAULTS or ":" not in rule.get("call", ""):
            raise ValueError(f"not a fault rule: {rule!r}")
    Path(f"{path}.hits").unlink(missing_ok=True)
    _write(Path(path), json.dumps(rules))


def _write(path: Path, text: str) -> None:
    """Put ``text`` in ``path`` in one step: a reader in another process sees the old text or the new, never part."""
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    temporary.write_text(text)
    temporary.replace(path)


def hits(path: Path) -> list[int]:
    """How many requests each rule of ``path`` faulted (none yet: an empty list)."""
    try:
        return json.loads(Path(f"{path}.hits").read_text())
    except FileNotFoundError:
        return []


def call_of(environ: dict, body: bytes) -> str:
    """``service:Operation`` of a signed AWS request (its WSGI ``environ`` and ``body``); "" if it is none."""
    scope = re.search(r"Credential=[^/]+/[^/]+/[^/]+/([^/]+)/", environ.get("HTTP_AUTHORIZATION", ""))
    if not scope:
        return ""
    service = scope.group(1)
    target = environ.get("HTTP_X_AMZ_TARGET")
    if target:
        return f"{service}:{target.rsplit('.', 1)[-1]}"
    action = re.search(rb"(?:^|&)Action=(\w+)", body) or re.search(r"(?:^|&)Action=(\w+)", environ.get("QUERY_STRING", ""))
    if action:
        name = action.group(1)
        return f"{service}:{name.decode() if isinstance(name, bytes) else name}"
    if service == "s3":
        return f"s3:{_s3_operation(environ)}"
    return f"{service}:"


def _s3_operation(environ: dict) -> str:
    method, query = environ["REQUEST_METHOD"], environ.get("QUERY_STRING", "")
    is_object = len([part for part in environ.get("PATH_INFO", "").split("/") if part]) > 1
    if method == "GET":
        if is_object:
            return "GetObject"
        return "ListObjectsV2" if "list-type=2" in query else "GetBucketLocation" if "location" in query else "ListObjects"
    if method == "HEAD":
        return "HeadObject" if is_object else "HeadBucket"
    if method == "PUT":
        if is_object:
            return "CopyObject" if "HTTP_X_AMZ_COPY_SOURCE" in environ else "PutObject"
        return "CreateBucket"
    if method == "DELETE":
        return "DeleteObject" if is_object else "DeleteBucket"
    return "DeleteObjects" if "delete" in query else method


def error_response(call: str, fault: str, resource: str) -> tuple[str, list[tuple[str, str]], bytes]:
    """(status line, headers, body) of AWS's answer ``fault`` to ``call`` on ``resource``, in its service's protocol."""
    service = call.split(":", 1)[0]
    codes = _CODES[fault]
    status, code = codes.get(service, codes["*"])
    if fault == "denied":
        action = _IAM_ACTIONS.get(call, call)
        message = (f"User: arn:aws:sts::123456789012:assumed-role/carcelery/i-0 is not authorized to perform: "
                   f"{action} on resource: {resource} because no identity-based policy allows the {action} action")
    else:
        message = f"injected {fault} fault"
    reason = {400: "Bad Request", 403: "Forbidden", 500: "Internal Server Error", 503: "Service Unavailable"}[status]
    request_id = uuid.uuid4().hex
    if service in _JSON:
        headers = [("Content-Type", "application/x-amz-json-1.0"), ("x-amzn-RequestId", request_id)]
        if service == "sqs":  # SQS's JSON protocol names its query-protocol code in a header
            headers.append(("x-amzn-query-error", f"{code};{'Receiver' if status >= 500 else 'Sender'}"))
        body = json.dumps({"__type": code, "message": message}).encode()
    elif service == "s3":
        headers = [("Content-Type", "application/xml"), ("x-amz-request-id", request_id)]
        body = (f"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>{message}</Message>"
                f"<RequestId>{request_id}</RequestId></Error>").encode()
    else:
        headers = [("Content-Type", "text/xml")]
        body = (f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error>"
                f"<RequestId>{request_id}</RequestId></ErrorResponse>").encode()
    return f"{status} {reason}", [*headers, ("Content-Length", str(len(body)))], body


def _strings(match: str | list[str]) -> list[str]:
    return [match] if isinstance(match, str) else list(match)


def _messages(call: str, body: bytes) -> list[str]:
    """The decoded bodies of the messages an SQS send carries (kombu's are base64 of JSON)."""
    if call not in ("sqs:SendMessage", "sqs:SendMessageBatch"):
        return []
    try:
        request = json.loads(body)
    except ValueError:
        return []
    decoded = []
    for entry in [request, *request.get("Entries", [])]:
        try:
            decoded.append(base64.b64decode(entry.get("MessageBody", "")).decode(errors="replace"))
        except ValueError:
            decoded.append(entry.get("MessageBody", ""))
    return decoded


class Injector:
    """WSGI middleware: answers requests that a rule of ``path`` matches with its fault, the others with ``app``."""

    def __init__(self, app: Callable, path: Path, log: Callable[[str], None] = print):
        self.app, self.path, self.log = app, Path(path), log
        self._lock = threading.Lock()
        self._loaded: tuple[float, list[dict]] = (-1.0, [])
        self._seen: list[int] = []
        self._hits: list[int] = []

    def _rules(self) -> list[dict]:
        try:
            changed = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            changed = 0
        if changed != self._loaded[0]:
            rules = json.loads(self.path.read_text()) if changed else []
            self._loaded = (changed, rules)
            self._seen, self._hits = [0] * len(rules), [0] * len(rules)
        return self._loaded[1]

    def _fault(self, call: str, request: str) -> dict | None:
        """The rule that faults this request, counted; None: the request goes through."""
        with self._lock:
            for index, rule in enumerate(self._rules()):
                match = rule.get("match", "")
                if rule["call"] != call or not all(part in request for part in _strings(match)):
                    continue
                self._seen[index] += 1
                times = rule.get("times")
                if self._seen[index] <= rule.get("skip", 0) or (times is not None and self._hits[index] >= times):
                    continue
                self._hits[index] += 1
                _write(Path(f"{self.path}.hits"), json.dumps(self._hits))
                return rule
        return None

    def _hold(self, rule: dict, seconds: float) -> None:
        """Wait ``seconds``, or until the rules file no longer holds ``rule``."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            with self._lock:
                if rule not in self._rules():
                    return
            time.sleep(0.05)

    def __call__(self, environ, start_response):
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        environ["wsgi.input"] = io.BytesIO(body)
        call = call_of(environ, body)
        request = " ".join([environ.get("PATH_INFO", ""), environ.get("QUERY_STRING", ""),
                            body.decode(errors="replace"), *_messages(call, body)])
        rule = self._fault(call, request) if call else None
        if rule is None:
            return self.app(environ, start_response)
        self.log(f"fault: {call} {rule['fault']} ({rule.get('match', '')})")
        fault = rule["fault"]
        if fault == "delay":
            self._hold(rule, rule.get("seconds", 1.0))
            fault = rule.get("then")
            if fault is None:
                return self.app(environ, start_response)
        resource = _strings(rule.get("match", ""))[-1:] or [environ.get("PATH_INFO", "")]
        status, headers, answer = error_response(call, fault, resource[0])
        start_response(status, headers)
        return [] if environ["REQUEST_METHOD"] == "HEAD" else [answer]
