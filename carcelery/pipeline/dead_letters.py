"""The dead-letter queue's messages: what each is, and sending them back to the queue they came from.

SQS moves a task's message there once it was received CARCELERY_MAX_RECEIVES
times without being done (its worker process died every time, or it was never
acknowledged); a worker sends there at once a message it cannot run, with its
kind and reason (``carcelery.transport.dead_letters``).
``python -m carcelery.commands.dlq`` is the operator's command.

Listing receives with long polling: a short poll (WaitTimeSeconds=0) asks a
sample of SQS's servers and may answer empty while messages wait on others; a
long poll asks them all. Sending back is SQS's own redrive, StartMessageMoveTask
(every message to the queue it came from), followed with ListMessageMoveTasks.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from typing import Any

from .. import aws
from ..settings import DEAD_LETTER_QUEUE, settings

# Seconds a listed message stays hidden while the rest are listed; made visible again after.
LOOK_SECONDS = 30
# A listing stops after this many messages.
MAX_LISTED = 10_000
# Seconds a receive of the listing waits for messages (long polling: every server is asked).
LONG_POLL = 1
# Seconds between looks at a redrive task, and at most for it to end.
LOOK_EVERY, REDRIVE_TIMEOUT = 1.0, 600.0


def _json(text: str):
    """kombu's SQS bodies are base64 JSON (unless sent without that encoding)."""
    try:
        return json.loads(base64.b64decode(text, validate=True))
    except (binascii.Error, ValueError):
        return json.loads(text)


def describe(message: dict) -> dict:
    """What a dead-lettered Celery message is: ``image``, ``bucket``, ``task``, ``id``, ``run``, ``receives``,
    ``queue``; and for one a worker could not run, ``kind`` and ``reason`` (its message attributes).

    Fields it does not carry (not a task of ours, of any shape) are None.
    """
    said = {name: value.get("StringValue") for name, value in message.get("MessageAttributes", {}).items()}
    found: dict[str, Any] = {"image": None, "bucket": None, "task": None, "id": None, "run": None, "queue": said.get("queue"),
             "receives": int(message.get("Attributes", {}).get("ApproximateReceiveCount", 0)),
             "kind": said.get("kind"), "reason": said.get("reason")}
    try:
        envelope = _json(message["Body"])
        headers, properties = envelope.get("headers", {}), envelope.get("properties", {})
        body = envelope["body"]
        args, kwargs, _ = _json(body) if properties.get("body_encoding") == "base64" else json.loads(body)
        ref = args[0] if args and isinstance(args[0], dict) else {}
        routing_key = properties.get("delivery_info", {}).get("routing_key")
        found.update(image=ref.get("key"), bucket=ref.get("bucket"), task=headers.get("task"), id=headers.get("id"),
                     run=ref.get("run") or kwargs.get("run"),
                     queue=settings.queue_name(routing_key) if isinstance(routing_key, str) else found["queue"])
    except (AttributeError, KeyError, TypeError, ValueError):
        pass  # a message that cannot run: its kind and reason say what it is
    # Any JSON may be there: text only.
    return {k: v if k == "receives" or isinstance(v, str) else None for k, v in found.items()}


def _url() -> str:
    return aws.client("sqs").get_queue_url(QueueName=settings.queue_name(DEAD_LETTER_QUEUE))["QueueUrl"]


def _visible(url: str) -> int:
    """SQS's approximate count of the queue's visible messages."""
    attributes = aws.client("sqs").get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
    return int(attributes["Attributes"]["ApproximateNumberOfMessages"])


def _received(url: str, expected: int) -> list[dict]:
    """The dead-letter queue's messages, received (hidden for LOOK_SECONDS), up to MAX_LISTED.

    Receives until ``expected`` (the visible messages SQS counted) are in, or a long poll answers none.
    """
    sqs = aws.client("sqs")
    got: list[dict] = []
    while len(got) < min(expected, MAX_LISTED):
        batch = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=LOOK_SECONDS,
                                    AttributeNames=["ApproximateReceiveCount"], MessageAttributeNames=["All"],
                                    WaitTimeSeconds=LONG_POLL).get("Messages", [])
        if not batch:
            break
        got += batch
    return got


def messages() -> list[dict]:
    """What is in the dead-letter queue (``describe`` of each), left there as it was (visible again).

    Messages in flight (received by someone else, for LOOK_SECONDS if by another listing) are not listed.
    """
    url, sqs = _url(), aws.client("sqs")
    got = _received(url, _visible(url))
    for start in range(0, len(got), 10):
        sqs.change_message_visibility_batch(QueueUrl=url, Entries=[
            {"Id": str(n), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
            for n, m in enumerate(got[start:start + 10])])
    return [describe(m) for m in got]


class RedriveFailed(Exception):
    """SQS's redrive task ended without moving every message (its FailureReason), or did not end in time."""


def redrive() -> int:
    """Send every message of the dead-letter queue back to the queue it came from (StartMessageMoveTask).

    Raises:
      RedriveFailed: the task failed, was cancelled, or ran longer than REDRIVE_TIMEOUT.

    Returns:
      How many messages were moved.
    """
    url, sqs = _url(), aws.client("sqs")
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    handle = sqs.start_message_move_task(SourceArn=arn)["TaskHandle"]
    deadline = time.monotonic() + REDRIVE_TIMEOUT
    while True:
        task = next(t for t in sqs.list_message_move_tasks(SourceArn=arn, MaxResults=10)["Results"]
                    if t["TaskHandle"] == handle)
        if task["Status"] == "COMPLETED":
            return task["ApproximateNumberOfMessagesMoved"]
        if task["Status"] in ("FAILED", "CANCELLED"):
            raise RedriveFailed(f"the redrive of {arn} {task['Status'].lower()} after moving "
                                f"{task['ApproximateNumberOfMessagesMoved']} messages: {task.get('FailureReason', '')}")
        if time.monotonic() > deadline:
            raise RedriveFailed(f"the redrive of {arn} is still {task['Status']} after {REDRIVE_TIMEOUT:.0f} s "
                                f"(task {handle}); follow it: aws sqs list-message-move-tasks --source-arn {arn}")
        time.sleep(LOOK_EVERY)
