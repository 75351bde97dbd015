"""S3 images: listing the images of a bucket, reading one, uploading a folder."""

from __future__ import annotations

import mimetypes
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from .. import aws

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclass(frozen=True)
class S3Image:
    bucket: str
    key: str
    etag: str
    size: int
    sequencer: str = ""  # its S3 event's (``events.sequence``), when an event announced it


def is_image_key(key: str) -> bool:
    return key.lower().endswith(IMAGE_SUFFIXES)


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
