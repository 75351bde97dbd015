"""AWS for carcelery: boto3 clients (here), errors in words (``errors``), the
tables' key schemas (``tables``), and what the pipeline needs created (``provision``).

boto3 clients: one per service per process.

Clients are made on first use and kept for the life of the process (a worker
child, the dispatcher), never per task. A forked child drops the ones it
inherits: their connections are kept alive, and two processes' requests on one
connection read each other's responses. Clients are thread-safe, a session is
not: clients are made one at a time, under a lock, so that a worker's threads
(the ``threads`` pool) share one client per service.
"""

from __future__ import annotations

import functools
import os
import threading
from typing import Iterator

import boto3
from botocore.config import Config

from ..settings import settings

# Retries of transient errors (throttling, 5xx, resets) with backoff and jitter,
# done by botocore itself; a bounded number of attempts.
_CONFIG = Config(retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=5, read_timeout=30)


_lock = threading.Lock()


@functools.cache
def _session() -> boto3.session.Session:
    return boto3.session.Session(region_name=settings.region, **settings.credentials)


@functools.cache
def _client(service: str):
    return _session().client(service, endpoint_url=settings.endpoint_url, config=_CONFIG)


def client(service: str):
    """The process's boto3 client for ``service`` ("s3", "sqs", "rekognition", ...)."""
    with _lock:
        return _client(service)


def reset() -> None:
    global _lock
    # A lock held by another thread when the process forked stays held in the child.
    _lock = threading.Lock()
    _session.cache_clear()
    _client.cache_clear()


os.register_at_fork(after_in_child=reset)


# DynamoDB's limits of keys per BatchGetItem and of requests per BatchWriteItem.
READ_BATCH = 100
WRITE_BATCH = 25


def split_uri(uri: str) -> tuple[str, str]:
    """(bucket, prefix) of an ``s3://bucket/prefix`` URI (settings checked its form)."""
    bucket, _, prefix = uri[len("s3://"):].partition("/")
    return bucket, prefix


def batch_get(dynamodb, table: str, keys: list[dict]) -> Iterator[dict]:
    """The items of ``table`` under ``keys`` (DynamoDB key maps), READ_BATCH per request.

    Keys DynamoDB leaves unprocessed (throttling) are asked for again. Items come
    in no particular order; a missing key yields nothing.

    Raises:
      botocore.exceptions.ClientError: the table is missing or not readable.
    """
    for start in range(0, len(keys), READ_BATCH):
        request: dict | None = {table: {"Keys": keys[start:start + READ_BATCH]}}
        while request:
            answer = dynamodb.batch_get_item(RequestItems=request)
            yield from answer["Responses"].get(table, [])
            request = answer.get("UnprocessedKeys") or None


def batch_write(dynamodb, table: str, requests: list[dict]) -> None:
    """BatchWriteItem of ``requests`` (at most 25) to ``table``, again for what DynamoDB leaves unprocessed.

    Raises:
      botocore.exceptions.ClientError: the table is missing or not writable.
    """
    request: dict | None = {table: requests}
    while request:
        request = dynamodb.batch_write_item(RequestItems=request).get("UnprocessedItems") or None
