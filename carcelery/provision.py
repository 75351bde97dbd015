"""Create what the pipeline needs: the bucket, the SQS queues, the DynamoDB tables.

Idempotent: what exists is left as it is. On AWS run it once from a machine
with the rights to create them; on the emulator ``carcelery.emulator`` runs it.

    python -m carcelery.provision
"""

from __future__ import annotations

import sys

from botocore.exceptions import ClientError

from . import aws, ledger
from .settings import DETECT_QUEUE, TEXT_QUEUE, VISIBILITY_TIMEOUT, settings
from .storage import error_code, explain

QUEUE_ATTRIBUTES = {
    "VisibilityTimeout": str(VISIBILITY_TIMEOUT),
    "SqsManagedSseEnabled": "true",
}


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


def queues() -> list[str]:
    sqs = aws.client("sqs")
    return [sqs.create_queue(QueueName=settings.queue_name(q), Attributes=QUEUE_ATTRIBUTES)["QueueUrl"]
            for q in (DETECT_QUEUE, TEXT_QUEUE)]


def table(name: str, key: str) -> None:
    """A DynamoDB table with string hash key ``key``, billed per request."""
    dynamodb = aws.client("dynamodb")
    try:
        dynamodb.create_table(TableName=name, BillingMode="PAY_PER_REQUEST",
                              AttributeDefinitions=[{"AttributeName": key, "AttributeType": "S"}],
                              KeySchema=[{"AttributeName": key, "KeyType": "HASH"}])
    except ClientError as exc:
        if error_code(exc) != "ResourceInUseException":
            raise
    dynamodb.get_waiter("table_exists").wait(TableName=name)


def everything() -> None:
    """Create the bucket, the queues and the ledger table, if missing."""
    bucket(settings.bucket)
    queues()
    table(settings.ledger_table, ledger.KEY)
    # Celery would create its own on first use, but two workers starting
    # together race to create it; its key is Celery's ("id").
    table(settings.results_table, "id")


def main() -> int:
    try:
        everything()
    except Exception as exc:  # noqa: BLE001 - one clear line instead of a traceback
        print(f"error: {explain(exc, settings.bucket) or exc}", file=sys.stderr)
        return 1
    print(f"ready: bucket {settings.bucket}, queues {settings.queue_name(DETECT_QUEUE)} and "
          f"{settings.queue_name(TEXT_QUEUE)}, tables {settings.ledger_table} and {settings.results_table}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
