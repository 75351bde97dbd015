"""Which images were already dispatched: a DynamoDB table keyed by bucket and key, holding the ETag.

It is what makes a scan dispatch new (or changed) images only, and what keeps
a second run over the same bucket from paying for the same recognition again.
"""

from __future__ import annotations

from botocore.exceptions import ClientError

from . import aws
from .settings import settings
from .storage import S3Image, error_code

KEY = "image"  # the table's hash key: "<bucket>/<key>"


def claim(image: S3Image, run_id: str, force: bool = False) -> bool:
    """Record ``image`` as dispatched in run ``run_id``.

    Parameters:
      image: the S3 object, with its ETag.
      run_id: the run dispatching it.
      force: claim it even if this ETag was dispatched before.

    Raises:
      botocore.exceptions.ClientError: the table is missing or not writable.

    Returns:
      False when the same object (same ETag) was dispatched before and ``force`` is off.
    """
    item = {KEY: {"S": f"{image.bucket}/{image.key}"}, "etag": {"S": image.etag}, "run": {"S": run_id}}
    condition = {} if force else {
        "ConditionExpression": "attribute_not_exists(image) OR etag <> :etag",
        "ExpressionAttributeValues": {":etag": {"S": image.etag}},
    }
    try:
        aws.client("dynamodb").put_item(TableName=settings.ledger_table, Item=item, **condition)
    except ClientError as exc:
        if error_code(exc) == "ConditionalCheckFailedException":
            return False
        raise
    return True

