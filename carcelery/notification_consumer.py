"""S3's event notifications consumed in Instance A's worker: a consumer bootstep on the events queue
(Celery's "Custom Message Consumers").

A worker imports this module at its start (``imports`` in celeryconfig.py), which adds the step to
the app's consumer steps; the beat imports it too (its backfill interval). The step consumes in a worker that
serves the ``detect`` queue (Instance A) once the events queue exists
(``python -m carcelery.aws.provision --events``): from the worker's start, or
within LOOK_EVERY seconds of the queue's making. It does nothing in other workers.

S3 sends plain JSON, not Celery messages: kombu's SQS channel hands such a
body over as it came (it base64-decodes only what is base64, which JSON is
not), as raw data (``application/data``). Each message is read
(``pipeline.notifications.parse``) in the worker's event loop, without a request:

- S3's ``s3:TestEvent``: acknowledged, nothing else;
- a body that is not an S3 event, or holds a record that is not one: sent as it
  came to the events' dead-letter queue with the reason (message attribute
  ``reason``), once: no loop; its good records are applied. A worker never
  stops for what a message holds, whatever its content;
- object events: held, unacknowledged, until the run they join is sent:
  CARCELERY_EVENTS_WINDOW seconds after its first event, or at once when it
  holds CARCELERY_EVENTS_BATCH events. Sending it is one task,
  ``apply_events`` (``pipeline.stream``), on Instance A's queue; then the
  events are acknowledged. A worker that dies before leaves them to SQS,
  which delivers them again (the ledger drops what was done).
"""

from __future__ import annotations

import logging

from celery import bootsteps
from celery.signals import beat_init
from kombu import Consumer, Queue
from kombu.message import Message

from .app import app
from .pipeline import notifications
from .settings import BACKFILL_INTERVAL, DETECT_QUEUE, EVENTS_DEAD_LETTER_QUEUE, EVENTS_QUEUE, settings

logger = logging.getLogger(__name__)

# Seconds between two looks for the events queue while it does not exist (one GetQueueUrl: 8,640 a day).
LOOK_EVERY = 10.0


def queue_url(name: str = EVENTS_QUEUE) -> str | None:
    """The URL of the events queue (or its dead-letter queue); None if provision --events has not made it.

    Raises:
      botocore.exceptions.ClientError: SQS refused the request (other than for a missing queue).
    """
    # Here, not at the top: the app imports this module, and boto3 comes with the first client, not with the app.
    from botocore.exceptions import ClientError

    from . import aws
    from .aws.errors import queue_missing

    try:
        return aws.client("sqs").get_queue_url(QueueName=settings.queue_name(name))["QueueUrl"]
    except ClientError as exc:
        if queue_missing(exc):
            return None
        raise


def set_aside(body: str, reason: str) -> None:
    """Send ``body`` to the events' dead-letter queue, ``reason`` in its message attribute ``reason``.

    Raises:
      botocore.exceptions.ClientError: SQS refused it.
    """
    from . import aws

    aws.client("sqs").send_message(QueueUrl=queue_url(EVENTS_DEAD_LETTER_QUEUE), MessageBody=body,
                                   MessageAttributes={"reason": {"DataType": "String", "StringValue": reason}})


@beat_init.connect
def backfill_interval(sender, **_) -> None:
    """With events on, the beat's scan is the backfill: every BACKFILL_INTERVAL s, unless CARCELERY_SCAN_INTERVAL is set."""
    if settings.scan_interval_set or queue_url() is None:
        return
    scans = {name: {**entry, "schedule": BACKFILL_INTERVAL} for name, entry in sender.app.conf.beat_schedule.items()
             if entry["task"] == "carcelery.tasks.scan_bucket"}
    sender.scheduler.update_from_dict(scans)
    logger.info("events: %s exists, the bucket's scan is the backfill, every %.0f s (CARCELERY_SCAN_INTERVAL)",
                settings.queue_name(EVENTS_QUEUE), BACKFILL_INTERVAL)


class S3Events(bootsteps.ConsumerStep):
    """Consumes the events queue in Instance A's worker and sends its events in runs (see the module)."""

    def __init__(self, parent, **kwargs):
        super().__init__(parent, **kwargs)
        self.held: list[tuple[list[dict], Message]] = []  # (the message's events, the message)
        self.flushing = None  # the timer entry that sends the held run
        self.looking = None  # the timer entry that looks for the events queue
        self.timer = None

    def start(self, c):
        self.timer, self.app = c.timer, c.app
        super().start(c)
        if DETECT_QUEUE in self.app.amqp.queues.consume_from and not self.consumers:
            logger.info("events: no queue %s, the beat's scan finds new images "
                        "(python -m carcelery.aws.provision --events turns S3 events on)",
                        settings.queue_name(EVENTS_QUEUE))
            self.looking = self.timer.call_repeatedly(LOOK_EVERY, self.look, (c,))

    def get_consumers(self, channel):
        if DETECT_QUEUE not in self.app.amqp.queues.consume_from or queue_url() is None:
            return []
        logger.info("events: consuming %s, runs every %.1f s or %d events",
                    settings.queue_name(EVENTS_QUEUE), settings.events_window, settings.events_batch)
        return [Consumer(channel, queues=[Queue(EVENTS_QUEUE, no_declare=True)], accept=["json"],
                         callbacks=[self.on_message], on_decode_error=self.on_decode_error,
                         prefetch_count=2 * settings.events_batch)]

    def look(self, c) -> None:
        """Consume the events queue if it exists now (``provision --events`` ran since the worker started)."""
        try:
            made = queue_url()
        except Exception:  # SQS unreachable for now: the next look tries again
            logger.exception("events: could not look for %s", settings.queue_name(EVENTS_QUEUE))
            return
        if made is None:
            return
        self.stop_looking()
        self.consumers = self.get_consumers(c.connection.channel())
        for consumer in self.consumers:
            consumer.consume()

    def on_message(self, body, message) -> None:
        try:
            found, rejected = notifications.parse(body)
        except notifications.NotAnEvent as exc:
            found, rejected = [], [exc]
        except Exception as exc:  # a bug in reading it: the message is kept, the worker goes on
            logger.exception("events: could not read a message")
            found, rejected = [], [notifications.NotAnEvent(f"{type(exc).__name__}: {exc} (a programming error in carcelery)")]
        if rejected and not self.dead_letter(message, notifications.why(rejected)):
            return
        if not found:
            message.ack()  # S3's test event, or nothing but what went to the dead-letter queue
            return
        self.held.append((found, message))
        if sum(len(e) for e, _ in self.held) >= settings.events_batch:
            self.send()
        elif self.flushing is None:
            self.flushing = self.timer.call_after(settings.events_window, self.send)

    def on_decode_error(self, message, exc) -> None:
        if self.dead_letter(message, f"{type(exc).__name__}: {exc}"):
            message.ack()

    def dead_letter(self, message, reason: str) -> bool:
        """Send ``message``'s body as it came to the events' dead-letter queue with ``reason``; whether it went.

        If it did not, the message goes back to its queue, whose redrive policy moves it to the same
        dead-letter queue (without the reason) after CARCELERY_MAX_RECEIVES receives: never a loop.
        """
        body = message.delivery_info.get("sqs_message", {}).get("Body") or str(message.body)
        logger.error("events: not an S3 event, to %s: %s", settings.queue_name(EVENTS_DEAD_LETTER_QUEUE), reason)
        try:
            set_aside(body, reason)
        except Exception:  # back to its queue: after CARCELERY_MAX_RECEIVES, SQS's redrive moves it
            logger.exception("events: could not send it to %s", settings.queue_name(EVENTS_DEAD_LETTER_QUEUE))
            message.reject(requeue=True)
            return False
        return True

    def send(self) -> None:
        """Send the held events as one ``apply_events`` task, then acknowledge them (requeue them if it fails)."""
        held = self.held
        self.forget()
        if not held:
            return
        try:
            self.app.signature("carcelery.tasks.apply_events", args=([e for found, _ in held for e in found],)).delay()
        except Exception:  # SQS delivers them again after their visibility timeout
            logger.exception("events: could not send a run of %d messages; they come again", len(held))
            for _, message in held:
                message.reject(requeue=True)
            return
        for _, message in held:
            message.ack()

    def stop(self, c):
        self.forget()
        self.stop_looking()
        super().stop(c)

    def shutdown(self, c):
        self.forget()
        self.stop_looking()
        super().shutdown(c)

    def stop_looking(self) -> None:
        if self.looking is not None:
            self.looking.cancel()
            self.looking = None

    def forget(self) -> None:
        """Let go of the held events (sent, or their channel closes: SQS then delivers them again) and the timer."""
        if self.flushing is not None:
            self.flushing.cancel()
            self.flushing = None
        self.held = []


app.steps["consumer"].add(S3Events)
