"""S3 images: listing the images of a bucket, reading one, uploading a folder.

The listing passes over what is not an image, and counts it by reason
(``skip_reason``), so that a run can say what it left out: a folder marker
(a key ending in ``/``, as the S3 console makes) or a key without an image
extension (``notes.txt``, ``README``). An empty or damaged object under an
image's name is dispatched, and fails with a message naming it.

``read`` reads at most CARCELERY_MAX_IMAGE_BYTES of an object: a larger one
fails its image (``ObjectTooLarge``) from GetObject's Content-Length, its
body left unread, whichever stage reads it (detect, text, the report).
"""

from __future__ import annotations

import mimetypes
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping

from .. import aws
from ..recognizers.base import ImageError
from ..settings import settings

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
# Why the listing passes over an object.
FOLDER, NOT_AN_IMAGE = "a folder", "not an image"


@dataclass(frozen=True)
class S3Image:
    bucket: str
    key: str
    etag: str
    size: int
    sequencer: str = ""  # its S3 event's (``notifications.sequence``), when an event announced it


def is_image_key(key: str) -> bool:
    return key.lower().endswith(IMAGE_SUFFIXES)


def skip_reason(key: str) -> str | None:
    """Why the listing passes over the object ``key`` (FOLDER, NOT_AN_IMAGE); None for an image."""
    if key.endswith("/"):
        return FOLDER
    return None if is_image_key(key) else NOT_AN_IMAGE


def describe_skipped(skipped: Mapping[str, int]) -> str:
    """``skipped`` (counts by reason) in words: ``1 skipped: a folder, 2 skipped: not an image``; empty for none."""
    return ", ".join(f"{count} skipped: {reason}" for reason, count in sorted(skipped.items()) if count)


def list_images(bucket: str, prefix: str = "", skipped: Counter | None = None) -> Iterator[S3Image]:
    """Every image object under ``prefix``, page by page (any bucket size).

    Parameters:
      skipped: where to count the objects passed over, by reason (``skip_reason``), as the listing goes.

    Raises:
      botocore.exceptions.ClientError: the bucket is missing or not readable (see ``explain``).
    """
    pages = aws.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    for page in pages:
        for obj in page.get("Contents", []):
            reason = skip_reason(obj["Key"])
            if reason is None:
                yield S3Image(bucket, obj["Key"], obj["ETag"].strip('"'), obj["Size"])
            elif skipped is not None:
                skipped[reason] += 1


class ObjectTooLarge(ImageError):
    """An image object larger than a worker reads (CARCELERY_MAX_IMAGE_BYTES); the message names it and the fix."""


def _too_large(key: str, size: str, limit: int) -> ObjectTooLarge:
    return ObjectTooLarge(f"{key} is {size} bytes, over CARCELERY_MAX_IMAGE_BYTES ({limit:,}): not read; "
                          f"downscale it (e.g. to 2000 px on its long side, as JPEG) or raise the limit")


def read(bucket: str, key: str, limit: int | None = None) -> bytes:
    """The object's bytes, if it holds at most ``limit`` (default CARCELERY_MAX_IMAGE_BYTES).

    Raises:
      ObjectTooLarge: it holds more; its body is not read (the connection is dropped).
      botocore.exceptions.ClientError: S3 refused (missing, denied; see ``explain``).
    """
    limit = settings.max_image_bytes if limit is None else limit
    answer = aws.client("s3").get_object(Bucket=bucket, Key=key)
    body = answer["Body"]
    with body:
        if answer["ContentLength"] > limit:
            raise _too_large(key, f"{answer['ContentLength']:,}", limit)
        data = body.read(limit + 1)  # never more, whatever the header said
    if len(data) > limit:
        raise _too_large(key, f"over {limit:,}", limit)
    return data


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
