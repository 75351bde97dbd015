"""Transient SQS queues: queues that live only as long as the process that made them.

AMQP deletes an exclusive or auto-delete queue (an event receiver's, a worker's
mailbox, a caller's reply queue) when its connection ends. SQS keeps a queue
until it is deleted, and SNS goes on delivering every event to it, so each
queue left behind slows every later event. Here each such queue carries a
lease: a tag holding the time until which its owner is known to be alive,
renewed while the owner declares or polls it. That time is on SQS's clock (the
Date of its answers), not the host's: owner and sweeper are different hosts,
and a host whose clock is off by more than a lease would otherwise sweep live
queues, or keep dead ones. The owner deletes its queues and
their SNS subscriptions when it exits; what a crashed owner left behind (its
lease ran out) is swept by the next process that makes a transient queue.

``Leases`` keeps them; ``TransientQueues`` is the Channel's side: it claims a
queue when it is declared and renews it when it is polled.
"""

from __future__ import annotations

import atexit
import email.utils
import logging
import os
import threading
import time
from typing import Callable, Iterable

from botocore.exceptions import ClientError
from kombu.exceptions import ChannelError

from ..aws.errors import queue_missing
from .mixin import Mixin

LEASE_TAG = "carcelery-lease"
# How long a transient queue outlives its owner's last declare or poll before a
# start-up sweeps it: long enough that a busy owner never loses its queue.
LEASE_SECONDS = 300
logger = logging.getLogger(__name__)


def _pages(client, method: str, key: str, **params) -> Iterable:
    for page in client.get_paginator(method).paginate(**params):
        yield from page.get(key, [])


def answered_at(response: dict) -> float | None:
    """When AWS answered ``response`` (a boto3 call's), by its own clock: the HTTP Date header, to the second.

    None if the answer has no Date header.
    """
    date = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    try:
        return email.utils.parsedate_to_datetime(date).timestamp() if date else None
    except (TypeError, ValueError):
        return None


class Leases:
    """The transient queues of one process under one queue-name prefix.

    Parameters:
      sqs, sns: boto3 clients of the account and region of the queues.
      prefix: queues and SNS topics whose names start with it are this pipeline's.
      ttl: seconds a lease lasts; it is renewed once a third of it has passed.
      clock: this host's time in seconds since the epoch (tests pass their own). Leases are
        written and read on SQS's clock: this one plus ``offset``, SQS's answers' Date less it.
    """

    def __init__(self, sqs, sns, prefix: str, ttl: float, clock: Callable[[], float] = time.time):
        self.sqs, self.sns, self.prefix, self.ttl, self.clock = sqs, sns, prefix, ttl, clock
        self.owned: dict[str, float] = {}  # queue URL -> when its lease was last written
        self.owner = os.getpid()
        self.offset: float | None = None  # SQS's clock less this host's, from the last answer with a Date
        self.closed = False  # released: the process is exiting, no queue may be made any more

    def claim(self, url: str) -> bool:
        """Make queue ``url`` ours and write its lease.

        Returns:
          False if the queue no longer exists (it was swept), else True.
        Raises:
          botocore.exceptions.ClientError: SQS refused the tag for another reason.
        """
        now = self.clock()
        try:
            self._dated(self.sqs.tag_queue(QueueUrl=url, Tags={LEASE_TAG: str(int(self._sqs_clock(url) + self.ttl))}))
        except ClientError as exc:
            if not queue_missing(exc):
                raise
            self.owned.pop(url, None)
            return False
        self.owned[url] = now
        return True

    def renew(self, url: str) -> None:
        """Write the lease of queue ``url`` again if it is ours and a third of it has passed.

        Raises:
          botocore.exceptions.ClientError: SQS refused the tag for another reason than a missing queue.
        """
        written = self.owned.get(url)
        if written is not None and self.clock() - written >= self.ttl / 3:
            self.claim(url)

    def release_all(self) -> None:
        """Delete our queues and their SNS subscriptions (in the owning process only).

        A forked child inherits this object but not the queues: it does nothing.
        """
        if os.getpid() != self.owner:
            return
        self.closed = True
        deleted = {arn for url in list(self.owned) if (arn := self._delete(url))}
        self.owned.clear()
        self._unsubscribe(lambda endpoint: endpoint in deleted)

    def sweep(self, keep: Iterable[str] = ()) -> list[str]:
        """Delete the queues whose lease ran out, then SNS subscriptions to queues that are gone.

        Parameters:
          keep: queue names not to delete (the one about to be declared again by its new owner).
        Returns:
          The URLs of the queues deleted.
        """
        keep = set(keep)
        found = [url for url in _pages(self.sqs, "list_queues", "QueueUrls", QueueNamePrefix=self.prefix)
                 if url not in self.owned and url.rsplit("/", 1)[-1] not in keep]
        expired = []
        for url in found:
            lease = self._lease(url)  # its answer's Date first, then the comparison on SQS's clock
            if lease < self._sqs_clock(url):
                expired.append(url)
        deleted = {arn for url in expired if (arn := self._delete(url))}
        self._unsubscribe(lambda endpoint: endpoint in deleted or not self._exists(endpoint))
        return expired

    def _lease(self, url: str) -> float:
        """The end of the queue's lease; infinite for a queue without one (not transient)."""
        try:
            tags = self._dated(self.sqs.list_queue_tags(QueueUrl=url)).get("Tags", {})
        except ClientError as exc:
            if queue_missing(exc):
                return float("inf")
            raise
        return float(tags[LEASE_TAG]) if LEASE_TAG in tags else float("inf")

    def _sqs_clock(self, url: str) -> float:
        """The time now on SQS's clock; asked of queue ``url`` if no answer of SQS's had a Date yet."""
        if self.offset is None:
            try:
                self._dated(self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"]))
            except ClientError as exc:
                if not queue_missing(exc):
                    raise
        return self.clock() + (self.offset or 0.0)

    def _dated(self, response: dict) -> dict:
        """``response``, its Date read into ``offset``: SQS's clock less this host's."""
        answered = answered_at(response)
        if answered is not None:
            self.offset = answered - self.clock()
        return response

    def _delete(self, url: str) -> str | None:
        """Delete queue ``url``; returns its ARN, or None if it was gone already."""
        try:
            arn = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
            self.sqs.delete_queue(QueueUrl=url)
        except ClientError as exc:
            if queue_missing(exc):
                return None
            raise
        return arn

    def _exists(self, queue_arn: str) -> bool:
        # One call per subscription, not ListQueues: a new queue can be missing
        # from ListQueues for a while (eventual consistency).
        try:
            self.sqs.get_queue_url(QueueName=queue_arn.rsplit(":", 1)[-1])
        except ClientError as exc:
            if queue_missing(exc):
                return False
            raise
        return True

    def _unsubscribe(self, gone: Callable[[str], bool]) -> None:
        """Remove the SQS subscriptions of this prefix's SNS topics whose queue ARN is ``gone``."""
        for topic in _pages(self.sns, "list_topics", "Topics"):
            arn = topic["TopicArn"]
            if not arn.rsplit(":", 1)[-1].startswith(self.prefix):
                continue
            for sub in _pages(self.sns, "list_subscriptions_by_topic", "Subscriptions", TopicArn=arn):
                if sub.get("Protocol") == "sqs" and gone(sub["Endpoint"]):
                    self.sns.unsubscribe(SubscriptionArn=sub["SubscriptionArn"])


_registry: dict[tuple, Leases] = {}
# Flower declares its event queue and its reply queues from several threads at once.
_registry_lock = threading.Lock()


def for_process(key: tuple, make: Callable[[], Leases]) -> tuple[Leases, bool]:
    """This process's Leases for ``key`` (endpoint, region, prefix), made by ``make`` on first use.

    Returns:
      The Leases, and whether they were made by this call (the caller then sweeps).
    """
    key = (os.getpid(), *key)
    with _registry_lock:
        if key in _registry:
            return _registry[key], False
        leases = _registry[key] = make()
        return leases, True


def existing(key: tuple) -> Leases | None:
    """This process's Leases for ``key``, or None if it has made no transient queue there."""
    return _registry.get((os.getpid(), *key))


@atexit.register
def _release_at_exit() -> None:
    for leases in list(_registry.values()):
        try:
            leases.release_all()
        except Exception as exc:  # noqa: BLE001 - at exit the emulator or network may be gone already
            logger.warning("could not delete this process's transient queues (%s); the next start sweeps "
                           "them once their lease runs out", exc)


class TransientQueues(Mixin):
    """Channel mixin: exclusive and auto-delete queues get a lease, deleted with it when the process exits."""

    # Debt: here, in _leases and in _renew, calls kombu's private `Channel._new_queue` (5.7.0; a queue's URL,
    # made if missing) and `Channel._queue_cache` (forgets the URL of a queue swept by another process).
    def queue_declare(self, queue=None, passive=False, **kwargs):
        """Declare ``queue``; an exclusive or auto-delete one gets a lease.

        Parameters, raises and returns: kombu's ``Channel.queue_declare``.
        """
        if not (kwargs.get("exclusive") or kwargs.get("auto_delete")):
            return super().queue_declare(queue, passive, **kwargs)
        registry = self._leases(keep=queue)
        declared = super().queue_declare(queue, passive, **kwargs)
        if not registry.claim(self._new_queue(declared.queue)):
            # Swept by another process after this one cached its URL: make it again.
            self._queue_cache.pop(self.canonical_queue_name(declared.queue), None)
            registry.claim(self._new_queue(declared.queue))
        return declared

    # Debt: overrides kombu's private `Channel._create_queue` (5.7.0): every queue kombu makes goes through it.
    def _create_queue(self, queue_name, attributes):
        registry = existing(self._leases_key)
        if registry is not None and registry.closed:
            # This process is exiting and has deleted its transient queues; a
            # consumer thread reconnecting (Flower's) would make its queue again.
            raise ChannelError(f"not creating queue {queue_name!r}: this process is exiting")
        return super()._create_queue(queue_name, attributes)

    def after_reply_message_received(self, queue):
        """Keep the reply queue for the next call (kombu deletes it after each call).

        SQS refuses to create a queue for 60 s after one of the same name was
        deleted, and a caller (Flower) reuses its reply queue's name; the
        queue's lease deletes it when the caller exits.
        """

    @property
    def _leases_key(self) -> tuple:
        return (self.endpoint_url, self.region, self.queue_name_prefix)

    def _leases(self, keep: str) -> Leases:
        """This process's leases; made, and stale queues swept, on the first transient queue."""
        registry, made = for_process(self._leases_key, lambda: Leases(
            self.sqs(), self.fanout.get_client(), self.queue_name_prefix, LEASE_SECONDS))
        if made:
            for url in registry.sweep(keep=[self.canonical_queue_name(keep)]):
                self._queue_cache.pop(url.rsplit("/", 1)[-1], None)
        return registry

    def _renew(self, queue: str) -> None:
        registry = existing(self._leases_key)
        if registry is not None:
            registry.renew(self._new_queue(queue))

    # Debt: overrides kombu's private `Channel._receive_message` and `_get_async` (5.7.0): the blocking
    # and the asynchronous receive, where a poll renews the lease.
    def _receive_message(self, queue, *args, **kwargs):
        self._renew(queue)
        return super()._receive_message(queue, *args, **kwargs)

    def _get_async(self, queue, *args, **kwargs):
        self._renew(queue)
        return super()._get_async(queue, *args, **kwargs)
