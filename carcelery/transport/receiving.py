"""Receiving in a worker: fewer, fuller ReceiveMessage requests, a quiet stop, failed receives and bad envelopes survived.

kombu's asynchronous receive (``Channel._get_bulk_async``) answers an SQS 5xx
with ``[]``, which its ``_on_messages_ready`` cannot read (the worker died with
an AttributeError), and raises for any other error answer into the promise of
the next receive, which then never comes (the worker went on, deaf to its
queue). Here a failed receive is sorted as every AWS error is
(``aws.errors``): a transient one (throttling, 5xx) is logged and the queue is
received again after the polling interval; one no retry can fix (access
denied, expired credentials) raises from the event loop, as kombu's own
errors do, so the worker stops with one line naming the call, the queue, the
missing permission and the fix. A message whose envelope kombu cannot read
goes to the dead-letter queue (``dead_letters``) before kombu reads it; a body
nested too deep for kombu's JSON reading is handed over as text, as any non-JSON body.
"""

from __future__ import annotations

import re
from functools import partial

from botocore.exceptions import ClientError
from kombu.log import get_logger
from kombu.transport import SQS
from vine import promise

from ..aws import errors
from .mixin import Mixin

logger = get_logger(__name__)


def _client_error(exc: Exception, operation: str = "ReceiveMessage") -> Exception:
    """kombu's asynchronous error (``Request HTTP Error  HTTP 400  Bad Request (b'{...}')``) as botocore's ClientError."""
    found = re.match(r"Request .*?HTTP (\d+) .*?\(b'(.*)'\)$", str(exc), re.S)
    if not found:
        return exc
    body = found.group(2)
    code = re.search(r'"__type":\s*"(?:[^"#]*#)?([^"]+)"', body)
    message = re.search(r'"[mM]essage":\s*"([^"]*)"', body)
    return ClientError({"Error": {"Code": code.group(1) if code else found.group(1),
                                  "Message": message.group(1) if message else body},
                        "ResponseMetadata": {"HTTPStatusCode": int(found.group(1))}}, operation)


class Receiving(Mixin):
    """Channel mixin: a worker receives when half its prefetch is free; no receive is scheduled after close;
    a failed receive is tried again (transient) or stops the worker with one line (permanent)."""

    # Debt: overrides kombu's private `Channel._get_from_sqs` (5.7.0): the same receive, but its
    # answer goes through a promise with an error handler, which kombu's lacks.
    def _get_from_sqs(self, queue_name, queue_url, connection, count=1, callback=None):
        guarded = promise(callback, on_error=partial(self._receive_failed, queue_url, callback))
        return super()._get_from_sqs(queue_name, queue_url, connection, count, guarded)

    def _receive_failed(self, url: str, callback, exc: Exception) -> None:
        """A receive of queue ``url`` failed with ``exc``: ``callback`` (its answer's handler) gets no
        messages, so that the next receive comes after the polling interval; or the worker stops."""
        error, name = _client_error(exc), url.rsplit("/", 1)[-1]
        failure = errors.sort(error, queue=name)  # the one policy
        if isinstance(failure, errors.Transient):
            logger.warning("ReceiveMessage on queue %s failed (%s): receiving again", name, errors.error_code(error))
            callback({})  # an answer without messages
            return
        if isinstance(failure, errors.Permanent):
            logger.error("%s: the worker stops", failure)
        # Out of the event loop, as kombu's own errors go: the worker stops (a bug too, as it is).
        self.hub.call_soon(_raise, exc if isinstance(failure, errors.Bug) else failure)

    # Debt: overrides kombu's private `Channel._on_messages_ready` (5.7.0): its asynchronous
    # client's answer to a 5xx is [] (no messages), which kombu's reads as a dict; and a message
    # whose envelope kombu cannot read raised there, out of the event loop: the worker died.
    def _on_messages_ready(self, queue, qname, messages):
        if isinstance(messages, list):
            logger.warning("ReceiveMessage on queue %s failed (SQS 5xx): receiving again", qname)
            return 0
        received = messages.get("Messages") or []
        # `queue` is the queue's URL here, `qname` its name (kombu's names).
        readable = [m for m in received if not self._unreadable(queue, qname, m)]
        dead = len(received) - len(readable)
        # How many were taken (kombu's answer: 0 for messages released) and dead-lettered: the next receive at once.
        return super()._on_messages_ready(queue, qname, {**messages, "Messages": readable}) + dead

    # Debt: overrides kombu's private `Channel._prepare_json_payload` (5.7.0): it reads every body as JSON,
    # catching JSONDecodeError and TypeError only; a body nested too deep (RecursionError) stopped the
    # worker. Such a body is no Celery message: {} as for any other, and its consumer is handed the text.
    def _prepare_json_payload(self, text):
        try:
            return super()._prepare_json_payload(text)
        except RecursionError:
            return {}

    # Debt: overrides kombu's private `Channel._loop1` (5.7.0): it schedules the next receive.
    def _loop1(self, queue, messages_fetched=None):
        # A receive that completes after the channel closed (a worker shutting
        # down) schedules no next one; kombu's raised in the timer and logged an error.
        if self.connection is not None:
            super()._loop1(queue, messages_fetched)

    # Debt: overrides kombu's private `Channel._get_message_estimate` (5.7.0): how many messages one receive asks for.
    def _get_message_estimate(self, max_if_unlimited=SQS.SQS_MAX_MESSAGES):
        estimate = super()._get_message_estimate(max_if_unlimited)
        prefetch = self.qos.prefetch_count
        if self.hub is None or not prefetch:  # no worker, or no limit (None or 0): nothing to wait for
            return estimate
        # In a worker, wait (polling_interval at a time) until half its prefetch
        # is free, so that one ReceiveMessage fetches several messages rather
        # than one per task done; the other half keeps its processes busy.
        if estimate < min((prefetch + 1) // 2, max_if_unlimited):
            return 0
        return estimate


def _raise(exc: Exception) -> None:
    raise exc
