"""Create what the pipeline needs: the bucket, the SQS queues, the DynamoDB tables.

Idempotent: what exists is left as it is. On AWS run it once from a machine
with the rights to create them; on the emulator ``carcelery.embedded.emulator`` runs it.

    python -m carcelery.aws.provision
"""

from __future__ import annotations

import sys

from botocore.exceptions import ClientError

from .. import aws
from ..pipeline import ledger, records
from ..settings import DEAD_LETTER_QUEUE, DETECT_QUEUE, TEXT_QUEUE, settings
from .errors import error_code, explain, queue_missing


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
    sqs = aws.client("sqs")
    dead = queue(settings.queue_name(DEAD_LETTER_QUEUE), settings.queue_attributes(None))
    arn = sqs.get_queue_attributes(QueueUrl=dead, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return [dead] + [queue(settings.queue_name(q), settings.queue_attributes(arn)) for q in (DETECT_QUEUE, TEXT_QUEUE)]


def table(name: str, key: str, range_key: str | None = None, expiry: str | None = None) -> None:
    """A DynamoDB table with string hash key ``key`` (and string ``range_key``), billed per request.

    With ``expiry``, DynamoDB's TTL on that attribute: it deletes each item once
    the time the item holds there (seconds since the epoch) has passed.
    """
    dynamodb = aws.client("dynamodb")
    keys = [(key, "HASH")] + ([(range_key, "RANGE")] if range_key else [])
    try:
        dynamodb.create_table(TableName=name, BillingMode="PAY_PER_REQUEST",
                              AttributeDefinitions=[{"AttributeName": k, "AttributeType": "S"} for k, _ in keys],
                              KeySchema=[{"AttributeName": k, "KeyType": kind} for k, kind in keys])
    except ClientError as exc:
        if error_code(exc) != "ResourceInUseException":
            raise
    dynamodb.get_waiter("table_exists").wait(TableName=name)
    if expiry:
        ttl = dynamodb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
        if ttl["TimeToLiveStatus"] not in ("ENABLED", "ENABLING") or ttl.get("AttributeName") != expiry:
            dynamodb.update_time_to_live(TableName=name,
                                         TimeToLiveSpecification={"Enabled": True, "AttributeName": expiry})


def everything() -> None:
    """Create the bucket, the queues and the tables (ledger, records, results, its TTL enabled), if missing."""
    bucket(settings.bucket)
    queues()
    table(settings.ledger_table, ledger.KEY)
    table(settings.records_table, records.HASH, records.RANGE)
    # Celery would create its own on first use, but two workers starting
    # together race to create it; its key is Celery's ("id"). Here, not by the
    # backend, its TTL too, on Celery's attribute (DynamoDBBackend._ttl_field):
    # workers need no right to change the table.
    table(settings.results_table, "id", expiry="ttl")


def main() -> int:
    try:
        everything()
    except Exception as exc:  # noqa: BLE001 - one clear line instead of a traceback
        print(f"error: {explain(exc, settings.bucket) or exc}", file=sys.stderr)
        return 1
    print(f"ready: bucket {settings.bucket}, queues {settings.queue_name(DETECT_QUEUE)}, "
          f"{settings.queue_name(TEXT_QUEUE)} and {settings.queue_name(DEAD_LETTER_QUEUE)}, tables {settings.ledger_table}, {settings.records_table} and {settings.results_table}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
