"""The tasks' error handling: bad images and permanent errors become records, transient ones are retried."""

from types import SimpleNamespace

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from celery.exceptions import Retry

from carcelery import tasks
from carcelery.recognizers import ImageError

REF = {"bucket": "b", "key": "k.jpg", "etag": "e"}


class FakeTask:
    def __init__(self, retries):
        self.request = SimpleNamespace(retries=retries)
        self.countdowns = []

    def retry(self, exc, countdown, max_retries):
        self.countdowns.append(countdown)
        return Retry(exc=exc)


def fail(exc):
    def work():
        raise exc
    return work


def test_image_errors_become_failure_records():
    record = tasks._attempt(FakeTask(0), REF, "detect", fail(ImageError("k.jpg is empty")))
    assert record["error"] == {"stage": "detect", "reason": "k.jpg is empty"}
    assert record["image"] == "k.jpg" and record["car"] is False and record["etag"] == "e"


def test_permanent_aws_errors_are_not_retried():
    exc = ClientError({"Error": {"Code": "NoSuchKey"}}, "GetObject")
    record = tasks._attempt(FakeTask(0), REF, "text", fail(exc))
    assert "object 'k.jpg' is not in bucket 'b'" in record["error"]["reason"]


@pytest.mark.parametrize("exc", [
    ClientError({"Error": {"Code": "ThrottlingException"}}, "DetectLabels"),
    ClientError({"Error": {"Code": "ProvisionedThroughputExceededException"}}, "DetectLabels"),
    EndpointConnectionError(endpoint_url="http://127.0.0.1:1"),
    ConnectionResetError(),
])
def test_transient_errors_are_retried_with_growing_backoff_then_recorded(exc):
    countdowns = []
    for retries in range(tasks.MAX_RETRIES):
        task = FakeTask(retries)
        with pytest.raises(Retry):
            tasks._attempt(task, REF, "detect", fail(exc))
        countdowns += task.countdowns
    assert all(0.5 * 2 ** i <= c <= 1.5 * 2 ** i for i, c in enumerate(countdowns)), countdowns
    record = tasks._attempt(FakeTask(tasks.MAX_RETRIES), REF, "detect", fail(exc))
    assert f"gave up after {tasks.MAX_RETRIES} retries" in record["error"]["reason"]
