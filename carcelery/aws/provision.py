"""Create what the pipeline needs: the bucket, the SQS queues, the DynamoDB tables.

Idempotent: what exists is left as it is. On AWS run it once from a machine
with the rights to create them; on the emulator ``carcelery.embedded.emulator`` runs it.

    python -m carcelery.aws.provision [--events]

``--events`` also turns on the bucket's event notifications (``events``): S3
then sends a message to the events queue for every image created or removed,
which Instance A's worker consumes (``carcelery.notification_consumer``). Only for a bucket
whose notification configuration you may set; others keep the beat's scan.
"""

from __future__ import annotations

import argparse
import json
import sys

from botocore.exceptions import ClientError

from .. import aws
from ..settings import DEAD_LETTER_QUEUE, DETECT_QUEUE, EVENTS_DEAD_LETTER_QUEUE, EVENTS_QUEUE, TEXT_QUEUE, settings
from .errors import error_code, explain, queue_missing
from .tables import LEDGER, RECORDS, RESULTS, Table


def bucket(name: str) -> None:
    s3 = aws.client("s3")
    try:
        s3.head_bucket(Bucket=name)
        return
    except ClientError as exc:
        if error_code(exc) not in ("404", "NoSuchBucket"):
            raise
    extra = {} if settings.region == "us-east-1" else {
        "CreateBucketConfiguration": {"LocationConstraint": settings.region}}
    s3.create_bucket(Bucket=name, **extra)


def queue(name: str, attributes: dict[str, str]) -> str:
    """The URL of SQS queue ``name``, created if missing, with ``attributes`` set."""
    sqs = aws.client("sqs")
    try:
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    except ClientError as exc:
        if not queue_missing(exc):
            raise
        return sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)
    return url


def queues() -> list[str]:
    """The dead-letter queue, then the work queues that redrive to it."""
    dead = queue(settings.queue_name(DEAD_LETTER_QUEUE), settings.queue_attributes(None))
    arn = queue_arn(dead)
    return [dead] + [queue(settings.queue_name(q), settings.queue_attributes(arn)) for q in (DETECT_QUEUE, TEXT_QUEUE)]


def queue_arn(url: str) -> str:
    return aws.client("sqs").get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]


# SQS's largest message: an S3 event is a few KB, with a key of up to 1 KB URL-encoded.
EVENT_MESSAGE_SIZE = 262144
# The events S3 sends: every way an object is created or removed.
EVENT_NAMES = ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]
# The notification's id in the bucket's configuration: other notifications of the bucket are kept.
NOTIFICATION_ID = "carcelery-events"


def events_policy(queue: str, bucket: str, account: str) -> dict:
    """The events queue's policy: only S3 may send, for ``bucket`` of ``account`` (no other bucket, no other account)."""
    return {"Version": "2012-10-17", "Statement": [{
        "Sid": "S3EventsOfOneBucket", "Effect": "Allow", "Principal": {"Service": "s3.amazonaws.com"},
        "Action": "sqs:SendMessage", "Resource": queue,
        "Condition": {"ArnEquals": {"aws:SourceArn": f"arn:aws:s3:::{bucket}"},
                      "StringEquals": {"aws:SourceAccount": account}}}]}


def events(name: str) -> str:
    """Turn on bucket ``name``'s event notifications into the events queue; the queue's URL.

    The events queue (encrypted, room for any event, a dead-letter queue of its
    own, a policy that lets only S3 send for this bucket and account), then the
    bucket's notification of objects created and removed, beside the bucket's
    other notifications. S3 then sends an ``s3:TestEvent``, which the consumer drops.

    Raises:
      botocore.exceptions.ClientError: no right to configure the bucket (not yours), or a call refused.
    """
    dead = queue(settings.queue_name(EVENTS_DEAD_LETTER_QUEUE), settings.queue_attributes(None))
    attributes = settings.queue_attributes(queue_arn(dead))
    url = queue(settings.queue_name(EVENTS_QUEUE), attributes)
    arn = queue_arn(url)
    account = aws.client("sts").get_caller_identity()["Account"]
    aws.client("sqs").set_queue_attributes(QueueUrl=url, Attributes={
        "MaximumMessageSize": str(EVENT_MESSAGE_SIZE), "Policy": json.dumps(events_policy(arn, name, account))})
    s3 = aws.client("s3")
    current = s3.get_bucket_notification_configuration(Bucket=name)
    current.pop("ResponseMetadata", None)
    others = [c for c in current.get("QueueConfigurations", []) if c.get("Id") != NOTIFICATION_ID]
    current["QueueConfigurations"] = others + [{"Id": NOTIFICATION_ID, "QueueArn": arn, "Events": EVENT_NAMES}]
    s3.put_bucket_notification_configuration(Bucket=name, NotificationConfiguration=current)
    return url


def table(name: str, schema: Table) -> None:
    """DynamoDB table ``name`` with ``schema``'s keys, billed per request.

    With ``schema.expiry``, DynamoDB's TTL on that attribute: it deletes each item once
    the time the item holds there (seconds since the epoch) has passed.
    """
    dynamodb = aws.client("dynamodb")
    keys = [(schema.hash, "HASH")] + ([(schema.range, "RANGE")] if schema.range else [])
    try:
        dynamodb.create_table(TableName=name, BillingMode="PAY_PER_REQUEST",
                              AttributeDefinitions=[{"AttributeName": k, "AttributeType": "S"} for k, _ in keys],
                              KeySchema=[{"AttributeName": k, "KeyType": kind} for k, kind in keys])
    except ClientError as exc:
        if error_code(exc) != "ResourceInUseException":
            raise
    dynamodb.get_waiter("table_exists").wait(TableName=name)
    if schema.expiry:
        ttl = dynamodb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
        if ttl["TimeToLiveStatus"] not in ("ENABLED", "ENABLING") or ttl.get("AttributeName") != schema.expiry:
            dynamodb.update_time_to_live(TableName=name,
                                         TimeToLiveSpecification={"Enabled": True, "AttributeName": schema.expiry})


def everything() -> None:
    """Create the bucket, the queues and the tables (ledger and results, their TTL enabled; records), if missing."""
    bucket(settings.bucket)
    queues()
    table(settings.ledger_table, LEDGER)
    table(settings.records_table, RECORDS)
    # Celery would create its own on first use, but two workers starting
    # together race to create it; its key is Celery's ("id"). Here, not by the
    # backend, its TTL too, on Celery's attribute (DynamoDBBackend._ttl_field):
    # workers need no right to change the table.
    table(settings.results_table, RESULTS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m carcelery.aws.provision", description=__doc__.split("\n")[0])
    parser.add_argument("--events", action="store_true",
                        help="also send the bucket's S3 events (objects created, removed) to the events queue")
    args = parser.parse_args(argv)
    try:
        everything()
        if args.events:
            events(settings.bucket)
    except Exception as exc:  # noqa: BLE001 - one clear line instead of a traceback
        reason = explain(exc, settings.bucket) or exc
        hint = (" (--events: a bucket whose notifications you may not set keeps the beat's scan; "
                "run without --events)") if args.events and error_code(exc) == "AccessDenied" else ""
        print(f"error: {reason}{hint}", file=sys.stderr)
        return 1
    print(f"ready: bucket {settings.bucket}, queues {settings.queue_name(DETECT_QUEUE)}, "
          f"{settings.queue_name(TEXT_QUEUE)} and {settings.queue_name(DEAD_LETTER_QUEUE)}, tables {settings.ledger_table}, {settings.records_table} and {settings.results_table}")
    if args.events:
        print(f"events: s3://{settings.bucket} sends objects created and removed to {settings.queue_name(EVENTS_QUEUE)} "
              f"(dead letters: {settings.queue_name(EVENTS_DEAD_LETTER_QUEUE)}); Instance A's worker consumes them")
    return 0


if __name__ == "__main__":
    sys.exit(main())
