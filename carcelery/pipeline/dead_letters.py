"""The dead-letter queue's messages: what each is, and sending them back to the queue they came from.

SQS moves a task's message there once it was received CARCELERY_MAX_RECEIVES
times without being done (its worker process died every time, or it was never
acknowledged). ``python -m carcelery.commands.dlq`` is the operator's command.
"""

from __future__ import annotations

import base64
import binascii
import json

from .. import aws
from ..settings import DEAD_LETTER_QUEUE, settings

# Seconds a listed message stays hidden while the rest are listed; made visible again after.
LOOK_SECONDS = 30
# A listing stops after this many messages.
MAX_LISTED = 10_000


def _json(text: str):
    """kombu's SQS bodies are base64 JSON (unless sent without that encoding)."""
    try:
        return json.loads(base64.b64decode(text, validate=True))
    except (binascii.Error, ValueError):
        return json.loads(text)


def describe(message: dict) -> dict:
    """What a dead-lettered Celery message is: ``image``, ``bucket``, ``task``, ``id``, ``run``, ``receives``, ``queue``.

    Fields it does not carry (not a task of ours) are None.
    """
    found = {"image": None, "bucket": None, "task": None, "id": None, "run": None, "queue": None,
             "receives": int(message.get("Attributes", {}).get("ApproximateReceiveCount", 0))}
    try:
        envelope = _json(message["Body"])
        headers, properties = envelope.get("headers", {}), envelope.get("properties", {})
        body = envelope["body"]
        args, kwargs, _ = _json(body) if properties.get("body_encoding") == "base64" else json.loads(body)
    except (KeyError, TypeError, ValueError):
        return found
    ref = args[0] if args and isinstance(args[0], dict) else {}
    routing_key = properties.get("delivery_info", {}).get("routing_key")
    found.update(image=ref.get("key"), bucket=ref.get("bucket"), task=headers.get("task"), id=headers.get("id"),
                 run=ref.get("run") or kwargs.get("run"),
                 queue=settings.queue_name(routing_key) if routing_key else None)
    return found


def _url() -> str:
    return aws.client("sqs").get_queue_url(QueueName=settings.queue_name(DEAD_LETTER_QUEUE))["QueueUrl"]


def _received(url: str) -> list[dict]:
    """The dead-letter queue's messages, received (hidden for LOOK_SECONDS), up to MAX_LISTED."""
    sqs, got = aws.client("sqs"), []
    while len(got) < MAX_LISTED:
        batch = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=LOOK_SECONDS,
                                    AttributeNames=["ApproximateReceiveCount"], WaitTimeSeconds=0).get("Messages", [])
        if not batch:
            break
        got += batch
    return got


def messages() -> list[dict]:
    """What is in the dead-letter queue (``describe`` of each), left there as it was (visible again)."""
    url, sqs = _url(), aws.client("sqs")
    got = _received(url)
    for start in range(0, len(got), 10):
        sqs.change_message_visibility_batch(QueueUrl=url, Entries=[
            {"Id": str(n), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
            for n, m in enumerate(got[start:start + 10])])
    return [describe(m) for m in got]


def redrive() -> tuple[int, int]:
    """Send every message of the dead-letter queue back to its queue; (sent back, left: not ours)."""
    url, sqs = _url(), aws.client("sqs")
    sent = left = 0
    for message in _received(url):
        queue = describe(message)["queue"]
        if queue is None:
            left += 1
            continue
        target = sqs.get_queue_url(QueueName=queue)["QueueUrl"]
        sqs.send_message(QueueUrl=target, MessageBody=message["Body"])
        sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        sent += 1
    return sent, left
