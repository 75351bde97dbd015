"""Broadcast over SNS: what Flower, ``celery events`` and ``celery inspect`` need of SQS.

Out of the box, over SQS, Celery neither starts remote control (the transport
declares no fanout) nor gets events out of a worker (its event exchange is a
topic exchange, which a virtual transport routes inside one process only).
With the transport option ``supports_fanout``, kombu publishes fanout messages
to an SNS topic to which each bound queue is subscribed, and this mixin:

- broadcasts the exchanges named in ``broadcast_exchanges`` (Celery's event
  exchange) as fanout; their receivers bind them with ``#``, i.e. everything;
  while no queue is subscribed to such a topic (nobody watches), its messages
  are not published at all: SNS would drop them, after one request each;
- routes a remote-control reply to the caller's reply queue, which was bound in
  the caller's process, not the replier's;
- deletes no-ack messages with the blocking client, a batch per receive, where
  there is no event loop (Flower's, ``celery events``' and ``celery inspect``'s receivers).
"""

from __future__ import annotations

import fnmatch
import time

from botocore.exceptions import ClientError
from kombu.log import get_logger
from kombu.pidbox import Mailbox
from kombu.transport.SQS.exceptions import DoesNotExistQueueException
from kombu.utils.encoding import bytes_to_str
from kombu.utils.objects import cached_property

from .mixin import Mixin

logger = get_logger(__name__)

# How long a process trusts its last look at a broadcast topic's subscribers:
# a new watcher (Flower) gets events at most WATCH_SECONDS after subscribing;
# one that left is still sent events for up to WATCHED_SECONDS. Each look is a
# request from every worker: at 1 s they were 4 % of a run's requests.
WATCH_SECONDS, WATCHED_SECONDS = 3.0, 10.0


class Broadcast(Mixin):
    """Channel mixin: broadcast exchanges over SNS, reply routing, no-ack deletion without an event loop."""

    @cached_property
    def broadcast_exchanges(self) -> frozenset[str]:
        return frozenset(self.transport_options.get("broadcast_exchanges", ()))

    @cached_property
    def _watchers(self) -> dict[str, tuple[bool, float]]:
        return {}  # exchange: (watched, until when that answer holds)

    def _watched(self, exchange: str) -> bool:
        """Whether any queue is subscribed to broadcast ``exchange``'s SNS topic (as of a recent look)."""
        watched, until = self._watchers.get(exchange, (False, 0.0))
        now = time.monotonic()
        if now >= until:
            try:
                # Debt: calls kombu's private `SNS._get_or_create_topic` (5.7.0): the only way to the topic's ARN.
                arn = self.fanout._get_or_create_topic(exchange)
                watched = bool(self.fanout.get_client(exchange).list_subscriptions_by_topic(
                    TopicArn=arn).get("Subscriptions"))
            except ClientError as exc:
                # Not allowed to look (an older IAM policy): publish, as without this check.
                logger.warning("cannot list the subscribers of %s (%s); publishing its messages anyway "
                               "(allow sns:ListSubscriptionsByTopic to skip them while nobody watches)",
                               exchange, exc.response["Error"].get("Code"))
                watched = True
            self._watchers[exchange] = watched, now + (WATCHED_SECONDS if watched else WATCH_SECONDS)
        return watched

    # Debt: overrides kombu's private `Channel._put_fanout` (5.7.0): where a fanout message goes to SNS.
    def _put_fanout(self, exchange, message, routing_key, **kwargs):
        if exchange in self.broadcast_exchanges and not self._watched(exchange):
            return  # nobody watches
        return super()._put_fanout(exchange, message, routing_key, **kwargs)

    def exchange_declare(self, exchange=None, type="direct", *args, **kwargs):
        """Declare ``exchange``; a broadcast exchange is declared fanout whatever its type.

        Parameters, raises and returns: kombu's ``Channel.exchange_declare``.
        """
        if self.supports_fanout and exchange in self.broadcast_exchanges:
            type = "fanout"
        return super().exchange_declare(exchange, type, *args, **kwargs)

    # Debt: overrides kombu's private `virtual.Channel._lookup` (5.7.0): where a published message's queues are found.
    def _lookup(self, exchange, routing_key, default=None):
        queues = super()._lookup(exchange, routing_key, default)
        if queues or not fnmatch.fnmatchcase(exchange or "", Mailbox.reply_exchange_fmt % "*"):
            return queues
        # A reply queue is bound in the caller's process, so it is unknown here;
        # kombu's pidbox names it "<routing key>.<reply exchange>".
        queue = f"{routing_key}.{exchange}"
        try:
            # Debt: calls kombu's private `Channel._resolve_queue_url` (5.7.0): looks a queue up, never makes it.
            self._resolve_queue_url(queue)
        except DoesNotExistQueueException:
            return []  # the caller is gone: nobody waits for this reply
        return [queue]

    # Debt: overrides kombu's private `Channel._messages_to_python` (5.7.0), and calls its private
    # `_noack_queues`, `_new_queue`, `_prepare_json_payload`, `_decode_python_message_body`: a
    # blocking receive's messages pass there, where kombu deletes no-ack ones asynchronously.
    def _messages_to_python(self, messages, queue):
        if self.hub is not None or queue not in self._noack_queues:
            return super()._messages_to_python(messages, queue)
        # A no-ack message is deleted on receipt. kombu deletes each with its
        # asynchronous client, which needs an event loop that Flower's, `celery
        # events`' and `celery inspect`'s receivers lack; one batch call per
        # receive also spares SQS nine calls in ten. _delete_batch: GatheredAcks.
        self._delete_batch(self.canonical_queue_name(queue), self._new_queue(queue),
                           [m["ReceiptHandle"] for m in messages])
        return [self._prepare_json_payload(bytes_to_str(self._decode_python_message_body(m["Body"])))
                for m in messages]
