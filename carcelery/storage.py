"""S3: listing the images of a bucket, reading one, uploading a folder.

Also turns AWS errors about resources and credentials into one clear sentence
naming the thing and the fix (``explain``).
"""

from __future__ import annotations

import mimetypes
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

from . import aws
from .settings import settings

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")

# Codes that no retry can fix, with what the person running it should do.
_FIXES = {
    "NoSuchBucket": "bucket {bucket!r} does not exist; create it (python -m carcelery.provision) "
                    "or set CARCELERY_BUCKET to an existing one",
    "NoSuchKey": "object {key!r} is not in bucket {bucket!r} (deleted since it was listed?)",
    "404": "object {key!r} is not in bucket {bucket!r} (deleted since it was listed?)",
    "AccessDenied": "access to {what} was denied; grant the calls listed in README's IAM policy",
    "403": "access to {what} was denied; grant the calls listed in README's IAM policy",
    "InvalidAccessKeyId": "the AWS access key is not valid; check your AWS credentials (aws configure)",
    "SignatureDoesNotMatch": "the AWS secret key is wrong; check your AWS credentials (aws configure)",
    "ExpiredToken": "the AWS session token has expired; renew your credentials",
    "UnrecognizedClientException": "the AWS credentials are not valid; check them (aws configure)",
}
PERMANENT = frozenset(_FIXES)


@dataclass(frozen=True)
class S3Image:
    bucket: str
    key: str
    etag: str
    size: int


def is_image_key(key: str) -> bool:
    return key.lower().endswith(IMAGE_SUFFIXES)


def error_code(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


# What SQS answers, depending on protocol and version, about a queue that does not exist.
QUEUE_MISSING = frozenset({"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist", "NonExistentQueue"})


def queue_missing(exc: Exception) -> bool:
    return error_code(exc) in QUEUE_MISSING


def explain(exc: Exception, bucket: str = "", key: str = "") -> str | None:
    """One sentence naming the resource and the fix, for errors no retry can fix; None for the others."""
    if isinstance(exc, NoCredentialsError):
        return "no AWS credentials found; configure them (aws configure, or an instance role) or use the emulator"
    fix = _FIXES.get(error_code(exc))
    if fix is None:
        return None
    what = f"s3://{bucket}/{key}" if key else f"bucket {bucket!r}" if bucket else "the AWS resource"
    return fix.format(bucket=bucket, key=key, what=what)


def unreachable(exc: EndpointConnectionError) -> str:
    """One sentence for an AWS endpoint (or the emulator) that cannot be reached, with the fix."""
    hint = "start it: python -m carcelery.emulator" if settings.target == "emulator" else "check the network"
    return f"cannot reach {settings.endpoint_url or exc.kwargs.get('endpoint_url')}; {hint}"


def list_images(bucket: str, prefix: str = "") -> Iterator[S3Image]:
    """Every image object under ``prefix``, page by page (any bucket size).

    Raises:
      botocore.exceptions.ClientError: the bucket is missing or not readable (see ``explain``).
    """
    pages = aws.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    for page in pages:
        for obj in page.get("Contents", []):
            if is_image_key(obj["Key"]):
                yield S3Image(bucket, obj["Key"], obj["ETag"].strip('"'), obj["Size"])


def read(bucket: str, key: str) -> bytes:
    return aws.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()


def upload_folder(folder: Path, bucket: str, prefix: str = "") -> list[str]:
    """Upload every image file of ``folder`` (not recursive) to ``bucket`` under ``prefix``.

    Raises:
      FileNotFoundError: ``folder`` is not a directory.
      botocore.exceptions.ClientError: the bucket is missing or not writable.

    Returns:
      The keys written.
    """
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder; give a folder of .jpg/.png images")
    s3 = aws.client("s3")
    keys = []
    for path in sorted(folder.iterdir()):
        if path.is_file() and is_image_key(path.name):
            key = prefix + path.name
            content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            s3.upload_file(str(path), bucket, key, ExtraArgs={"ContentType": content_type})
            keys.append(key)
    return keys

