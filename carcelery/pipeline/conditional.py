"""JSON objects in S3 that a writer replaces only if they are still the ones it read (conditional writes).

``get`` gives an object with its ETag; ``put_if`` writes with ``If-Match`` on
that ETag (``If-None-Match: *`` where there was none), and answers False when
S3 refuses (412 PreconditionFailed, or 409 ConditionalRequestConflict while
another conditional write of the key is in flight): another writer's object is
there, to be read again.
"""

from __future__ import annotations

import json

from botocore.exceptions import ClientError

from .. import aws
from ..aws.errors import error_code

LOST = ("PreconditionFailed", "ConditionalRequestConflict")


def get(bucket: str, key: str) -> tuple[dict, str] | None:
    """(the JSON object ``key`` of ``bucket``, its ETag); None if there is none.

    Raises:
      botocore.exceptions.ClientError: the bucket is missing (NoSuchBucket) or not readable.
    """
    try:
        answer = aws.client("s3").get_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if error_code(exc) == "NoSuchKey":
            return None
        raise
    return json.loads(answer["Body"].read()), answer["ETag"]


def put_if(bucket: str, key: str, held: dict, etag: str | None) -> bool:
    """Put ``held`` as JSON object ``key`` of ``bucket`` if it is still the one of ``etag`` (None: none yet).

    Returns:
      Whether it was (False: another writer replaced it since it was read).

    Raises:
      botocore.exceptions.ClientError: S3 refused for another cause (a permission, a missing bucket).
    """
    condition = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
    try:
        aws.client("s3").put_object(Bucket=bucket, Key=key, Body=json.dumps(held).encode(),
                                    ContentType="application/json", **condition)
    except ClientError as exc:
        if error_code(exc) in LOST:
            return False
        raise
    return True
