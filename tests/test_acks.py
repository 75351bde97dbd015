"""Gathered deletes: a refused delete raises as kombu's basic_ack does; what SQS fails on its side is tried again."""

import logging

import boto3
import pytest
from botocore.stub import Stubber
from kombu.asynchronous import Hub
from kombu.transport import SQS

from test_pipeline import own_stack

from carcelery import aws
from carcelery.aws import errors
from carcelery.transport import acks

URL = "https://sqs.us-east-1.amazonaws.com/1/carcelery-text"


class Channel(acks.GatheredAcks):
    """The mixin alone, on a stubbed SQS client."""

    closed = False

    def __init__(self, client, hub=None):
        self.client, self.hub = client, hub

    def sqs(self, queue=None):
        return self.client


@pytest.fixture
def stubbed():
    client = boto3.client("sqs", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    with Stubber(client) as stub:
        yield Channel(client), stub
        stub.assert_no_pending_responses()


def entries(*ids):
    return [{"Id": str(n), "ReceiptHandle": f"h{n}"} for n in ids]


def test_a_denied_delete_raises_kombus_exception_naming_call_queue_and_permission(stubbed):
    chan, stub = stubbed
    stub.add_client_error("delete_message_batch", service_error_code="AccessDenied", http_status_code=403)
    with pytest.raises(SQS.AccessDeniedQueueException) as raised:
        chan._delete_batch("text", URL, ["h0", "h1"])
    assert str(raised.value) == ("DeleteMessageBatch on queue carcelery-text failed (AccessDenied): the credentials "
                                 "lack sqs:DeleteMessage; grant it (deploy/iam-policy.json, docs/aws.md)")


def test_other_permanent_errors_raise_typed(stubbed):
    chan, stub = stubbed
    stub.add_client_error("delete_message_batch", service_error_code="ExpiredToken", http_status_code=400)
    with pytest.raises(errors.Permanent, match=r"queue carcelery-text failed .ExpiredToken.: the AWS session token"):
        chan._delete_batch("text", URL, ["h0"])


def test_entries_failed_on_sqs_side_are_tried_again(stubbed, caplog):
    chan, stub = stubbed
    stub.add_response("delete_message_batch", {"Successful": [{"Id": "0"}], "Failed": [
        {"Id": "1", "SenderFault": False, "Code": "InternalError"}]}, {"QueueUrl": URL, "Entries": entries(0, 1)})
    stub.add_response("delete_message_batch", {"Successful": [{"Id": "1"}], "Failed": []},
                      {"QueueUrl": URL, "Entries": entries(1)})
    with caplog.at_level(logging.WARNING):
        chan._delete_batch("text", URL, ["h0", "h1"])
    assert not caplog.records


def test_refused_entries_are_reported_in_one_line_and_not_tried_again(stubbed, caplog):
    chan, stub = stubbed
    stub.add_response("delete_message_batch", {"Successful": [{"Id": "0"}], "Failed": [
        {"Id": "1", "SenderFault": True, "Code": "ReceiptHandleIsInvalid", "Message": "bad handle"}]},
        {"QueueUrl": URL, "Entries": entries(0, 1)})
    chan._delete_batch("text", URL, ["h0", "h1"])
    [line] = [r.getMessage() for r in caplog.records]
    assert line == ("DeleteMessageBatch on queue carcelery-text refused 1 of 2 entries (ReceiptHandleIsInvalid: "
                    "bad handle): those messages will be delivered again")


def test_a_throttled_delete_is_a_warning(stubbed, caplog):
    chan, stub = stubbed
    for _ in range(2):
        stub.add_client_error("delete_message_batch", service_error_code="RequestThrottled", http_status_code=400)
    chan._delete_batch("text", URL, ["h0"])
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert "did not delete 1 done messages of queue carcelery-text" in caplog.text


def test_the_refusal_leaves_the_event_loop_as_kombus_basic_ack_would(stubbed, monkeypatch):
    """From the worker's event loop: raised out of the loop (the worker stops), not logged and forgotten by its timer."""
    chan, stub = stubbed
    stub.add_client_error("delete_message_batch", service_error_code="AccessDenied", http_status_code=403)
    monkeypatch.setattr(acks, "ACK_DELAY", 0)
    chan.hub = Hub()
    try:
        chan._gather_ack(("text", URL), "h0")
        loop = chan.hub.create_loop()
        with pytest.raises(SQS.AccessDeniedQueueException):
            for _ in range(10):
                next(loop)
    finally:
        chan.hub.close()


# A worker whose DeleteMessageBatch calls are all denied, as by a role without sqs:DeleteMessage.
DENY_DELETES = """
import sys
import botocore.client
from botocore.exceptions import ClientError
made = botocore.client.BaseClient._make_api_call
def denied(self, operation, params):
    if operation == "DeleteMessageBatch":
        raise ClientError({"Error": {"Code": "AccessDenied", "Message": "denied"},
                           "ResponseMetadata": {"HTTPStatusCode": 403}}, operation)
    return made(self, operation, params)
botocore.client.BaseClient._make_api_call = denied
from celery.__main__ import main
sys.argv = ["celery", *sys.argv[1:]]
main()
"""


def test_a_worker_refused_its_deletes_stops_naming_the_permission(emulator, bucket, seed_dir, tmp_path):
    with own_stack(tmp_path, CARCELERY_RECOGNIZER="noop") as stack:
        worker = stack.start("worker_a", ["-c", DENY_DELETES, "-A", "carcelery", "worker", "-Q", "detect", "-c", "1",
                                          "-n", "denied@%h", "--loglevel", "INFO"], " ready.", timeout=120)
        aws.client("s3").put_object(Bucket=bucket, Key="2.jpg", Body=(seed_dir / "2.jpg").read_bytes())
        assert stack.run("carcelery.dispatch", "--bucket", bucket).returncode == 0
        assert worker.wait(timeout=30) != 0, "a worker that cannot delete what it did stops, as under kombu's basic_ack"
        assert ("Unrecoverable error: AccessDeniedQueueException('DeleteMessageBatch on queue "
                f"{stack.env['CARCELERY_QUEUE_PREFIX']}detect failed (AccessDenied): the credentials lack "
                "sqs:DeleteMessage; grant it (deploy/iam-policy.json, docs/aws.md)')") in stack.log("worker_a")
