"""A message a worker cannot run goes to the dead-letter queue at once, once, with its reason.

SQS's redrive policy moves a message to the dead-letter queue after
CARCELERY_MAX_RECEIVES receives: right for one whose worker died (the next
try may do), wrong for one whose content is bad: kombu raised on it in the
event loop and the worker died (``{"properties": 5}``), or Celery rejected
it and SQS delivered it again, four more times. Here such a message is sent
to the dead-letter queue (the events queue's: to the events' dead-letter
queue) with three message attributes, ``kind``
(``Unrunnable``), ``reason`` (why it cannot run, in words) and ``queue``
(the queue it came from), its body as it came, and deleted from its queue;
the worker goes on.

Two ways in:

- the transport: an envelope kombu cannot make a message of
  (``envelope_problem``: ``properties``, ``headers``, ``body``,
  ``content-type``, ``content-encoding`` of the wrong type);
- a reject without requeue, Celery's way with a message it cannot run (not a
  task message, an unknown task, content that is not JSON, arguments of the
  wrong shape: ``carcelery.rejecting``), whose reason it leaves in the
  message's ``delivery_info`` (``mark``).

A message the dead-letter queue does not take (one near SQS's size limit,
with the attributes added; the dead-letter queue missing) is rejected as
kombu rejects (deleted, unless its queue's redrive policy moves it after
CARCELERY_MAX_RECEIVES receives), or, an envelope kombu cannot read, left in
its queue for the redrive policy; both logged.
"""

from __future__ import annotations

import base64
import binascii
import enum
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError
from kombu.log import get_logger

from ..aws import errors
from ..printable import json_kind, printable
from ..settings import DEAD_LETTER_QUEUE, EVENTS_DEAD_LETTER_QUEUE, EVENTS_QUEUE

logger = get_logger(__name__)



class Unrunnable(str, enum.Enum):
    """Why a message cannot run: its dead letter's ``kind`` attribute."""

    ENVELOPE = "envelope"  # kombu cannot read its envelope
    NOT_A_TASK = "not-a-task"  # no task named in it (not JSON, not an object, not Celery's)
    UNKNOWN_TASK = "unknown-task"  # a task no worker of carcelery runs
    CONTENT = "content"  # not JSON (accept_content), or not decodable as its content type says
    ARGUMENTS = "arguments"  # the task's arguments, or its headers, not of the shape it reads
    UNREADABLE = "unreadable"  # Celery raised reading it
    REJECTED = "rejected"  # rejected without a reason given


# The keys of a message's delivery_info under which a rejecting consumer leaves its kind and reason.
KIND, REASON = "carcelery_kind", "carcelery_reason"
# A reason longer than this is cut: SQS counts message attributes in the message's size.
MAX_REASON = 1000

_OPTIONAL_TEXT = ("content-type", "content-encoding")


def envelope_problem(payload: dict) -> str | None:
    """Why kombu cannot make a message of ``payload`` (an SQS body's JSON object), or None.

    A payload without ``properties`` is not kombu's envelope: kombu takes the
    whole text as the body, and Celery rejects it (not a task message).
    """
    if "properties" not in payload:
        return None
    properties = payload["properties"]
    if not isinstance(properties, dict):
        return f"the envelope's properties is {json_kind(properties)}, not an object"
    if not isinstance(properties.get("delivery_info", {}), dict):
        return f"the envelope's properties.delivery_info is {json_kind(properties['delivery_info'])}, not an object"
    encoding = properties.get("body_encoding")
    if encoding not in (None, "base64"):
        return f"the envelope's properties.body_encoding is {printable(repr(encoding))[:100]}, not base64 or absent"
    body = payload.get("body")
    if not isinstance(body, str):
        return f"the envelope's body is {json_kind(body)}, not a string"
    if encoding == "base64":
        try:
            base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            return "the envelope's body is not base64, as its properties.body_encoding says"
    headers = payload.get("headers")
    if headers is not None and not isinstance(headers, dict):
        return f"the envelope's headers is {json_kind(headers)}, not an object"
    for field in _OPTIONAL_TEXT:
        if not isinstance(payload.get(field, ""), (str, type(None))):
            return f"the envelope's {field} is {json_kind(payload[field])}, not a string"
    return None


class DeadLetters:
    """Channel mixin: a message that cannot run goes to the dead-letter queue with its reason (see the module)."""

    # kombu's SQS Channel's, which the class this is mixed into has (declared for the type checker).
    sqs: Callable[..., Any]
    _new_queue: Callable[..., str]
    _decode_python_message_body: Callable[[str], bytes]
    _prepare_json_payload: Callable[[str], dict]
    canonical_queue_name: Callable[[str], str]

    def _unreadable(self, queue_url: str, qname: str, message: dict) -> bool:
        """Whether SQS ``message`` of queue ``qname`` is no envelope kombu can read; if so it is dead-lettered."""
        text = self._decode_python_message_body(message["Body"])
        problem = envelope_problem(self._prepare_json_payload(text.decode(errors="replace")))
        if problem is None:
            return False
        self._dead_letter(queue_url, qname, message, problem, Unrunnable.ENVELOPE)
        return True

    def _dead_letter_rejected(self, info: dict, queue: str | None) -> bool:
        """Dead-letter the SQS message of ``info`` (a delivery_info) of ``queue``, rejected without requeue.

        Returns:
          Whether it was sent to the dead-letter queue (False: SQS did not take it).
        """
        return self._dead_letter(info["sqs_queue"], queue, info["sqs_message"],
                                 info.get(REASON) or "rejected by the worker", Unrunnable(info.get(KIND, "rejected")))

    def _dead_letter(self, queue_url: str, qname: str | None, message: dict, reason: str, kind: Unrunnable) -> bool:
        """Send ``message`` of ``queue_url`` to the dead-letter queue with ``kind`` and ``reason``, then delete it.

        Sent before deleted: a worker that dies between the two leaves a copy in
        each, never none.

        Raises:
          Exception: the delete failed other than with an SQS error answer (as kombu's reject raises).

        Returns:
          Whether it was sent (False: left in its queue, logged).
        """
        reason, name = reason[:MAX_REASON], queue_url.rsplit("/", 1)[-1]
        sqs = self.sqs(queue=qname)
        try:
            # The events queue's (S3's notifications, carcelery.notification_consumer) have a dead-letter queue of their own.
            dead = EVENTS_DEAD_LETTER_QUEUE if qname == self.canonical_queue_name(EVENTS_QUEUE) else DEAD_LETTER_QUEUE
            sqs.send_message(QueueUrl=self._new_queue(dead), MessageBody=message["Body"],
                             MessageAttributes={
                                 "reason": {"DataType": "String", "StringValue": reason},
                                 "kind": {"DataType": "String", "StringValue": kind.value},
                                 "queue": {"DataType": "String", "StringValue": name}})
        except Exception as exc:  # noqa: BLE001 - not dead-lettered (the caller says what then); the worker goes on
            logger.error("queue %s: message %s cannot run (%s) and could not be sent to the dead-letter queue "
                         "(%s)", name, message.get("MessageId"), printable(reason), exc)
            return False
        try:
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
        except ClientError as exc:  # as kombu's reject: logged; it comes back and goes again
            logger.warning("Could not delete rejected message %s of queue %s after sending it to the dead-letter "
                           "queue (%s): it will be received again", message.get("MessageId"), name,
                           errors.error_code(exc))
        logger.error("queue %s: message %s sent to the dead-letter queue (%s): %s "
                     "(python -m carcelery.commands.dlq lists it)", name, message.get("MessageId"), kind.value,
                     printable(reason))
        return True


def mark(delivery_info: dict, kind: Unrunnable, reason: str) -> None:
    """Say in a message's ``delivery_info`` why it cannot run, before it is rejected without requeue."""
    delivery_info[KIND], delivery_info[REASON] = kind.value, reason
