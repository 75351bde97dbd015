"""The dead-letter queue: listed with long polls until SQS's count is in; sent back by SQS's own redrive."""

import base64
import json
import re
import uuid

import boto3
import pytest
from botocore.stub import Stubber
from hypothesis import given
from hypothesis import strategies as st
from test_bad_messages import JSON

from carcelery import aws
from carcelery.pipeline import dead_letters

URL = "https://sqs.us-east-1.amazonaws.com/1/carcelery-dead-letter"
ARN = "arn:aws:sqs:us-east-1:1:carcelery-dead-letter"


@pytest.fixture
def stub(monkeypatch):
    client = boto3.client("sqs", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    monkeypatch.setattr(aws, "client", lambda service: client)
    monkeypatch.setattr(dead_letters, "LOOK_EVERY", 0, raising=False)
    with Stubber(client) as stubber:
        stubber.add_response("get_queue_url", {"QueueUrl": URL}, {"QueueName": "carcelery-dead-letter"})
        yield stubber
        stubber.assert_no_pending_responses()


def message(n):
    return {"MessageId": str(n), "ReceiptHandle": f"h{n}", "Body": "not a task", "Attributes": {"ApproximateReceiveCount": "5"}}


def receive(stub, *numbers):
    stub.add_response("receive_message", {"Messages": [message(n) for n in numbers]} if numbers else {}, {
        "QueueUrl": URL, "MaxNumberOfMessages": 10, "VisibilityTimeout": dead_letters.LOOK_SECONDS,
        "AttributeNames": ["ApproximateReceiveCount"], "MessageAttributeNames": ["All"],
        "WaitTimeSeconds": dead_letters.LONG_POLL})


def made_visible(stub, *numbers):
    stub.add_response("change_message_visibility_batch", {"Successful": [], "Failed": []}, {"QueueUrl": URL, "Entries": [
        {"Id": str(i), "ReceiptHandle": f"h{n}", "VisibilityTimeout": 0} for i, n in enumerate(numbers)]})


def counted(stub, visible):
    stub.add_response("get_queue_attributes", {"Attributes": {"ApproximateNumberOfMessages": str(visible)}},
                      {"QueueUrl": URL, "AttributeNames": ["ApproximateNumberOfMessages"]})


def test_listing_long_polls_past_a_short_answer_until_sqs_count_is_in(stub):
    # SQS answers a receive with what it has at hand: 1, then 2 of the 3 it counted.
    counted(stub, 3)
    receive(stub, 1)
    receive(stub, 2, 3)
    made_visible(stub, 1, 2, 3)
    assert len(dead_letters.messages()) == 3


def test_listing_ends_on_an_empty_long_poll(stub):
    counted(stub, 3)  # two of them received by someone else meanwhile
    receive(stub, 1)
    receive(stub)
    made_visible(stub, 1)
    assert [m["receives"] for m in dead_letters.messages()] == [5]


def test_redrive_is_sqs_message_move_task_followed_to_its_end(stub):
    stub.add_response("get_queue_attributes", {"Attributes": {"QueueArn": ARN}},
                      {"QueueUrl": URL, "AttributeNames": ["QueueArn"]})
    stub.add_response("start_message_move_task", {"TaskHandle": "t1"}, {"SourceArn": ARN})
    for status, moved in (("RUNNING", 3), ("COMPLETED", 7)):
        stub.add_response("list_message_move_tasks", {"Results": [
            {"TaskHandle": "t1", "Status": status, "SourceArn": ARN, "ApproximateNumberOfMessagesMoved": moved}]},
            {"SourceArn": ARN, "MaxResults": 10})
    assert dead_letters.redrive() == 7


def test_a_failed_redrive_says_why(stub):
    stub.add_response("get_queue_attributes", {"Attributes": {"QueueArn": ARN}},
                      {"QueueUrl": URL, "AttributeNames": ["QueueArn"]})
    stub.add_response("start_message_move_task", {"TaskHandle": "t1"}, {"SourceArn": ARN})
    stub.add_response("list_message_move_tasks", {"Results": [
        {"TaskHandle": "t1", "Status": "FAILED", "SourceArn": ARN, "ApproximateNumberOfMessagesMoved": 2,
         "FailureReason": "AWS.SimpleQueueService.NonExistentQueue"}]}, {"SourceArn": ARN, "MaxResults": 10})
    with pytest.raises(dead_letters.RedriveFailed, match=re.escape("failed after moving 2 messages: AWS.SimpleQueueService")):
        dead_letters.redrive()


def test_the_emulator_moves_dead_letters_back_to_the_queue_they_came_from(emulator):
    sqs, prefix = aws.client("sqs"), f"m{uuid.uuid4().hex[:8]}-"
    dead = sqs.create_queue(QueueName=f"{prefix}dead")["QueueUrl"]
    dead_arn = sqs.get_queue_attributes(QueueUrl=dead, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    policy = json.dumps({"deadLetterTargetArn": dead_arn, "maxReceiveCount": 1})
    work = {name: sqs.create_queue(QueueName=f"{prefix}{name}", Attributes={"RedrivePolicy": policy})["QueueUrl"]
            for name in ("a", "b")}
    for name, url in work.items():
        sqs.send_message(QueueUrl=url, MessageBody=f"from {name}")
        assert sqs.receive_message(QueueUrl=url, VisibilityTimeout=0)["Messages"]
        assert "Messages" not in sqs.receive_message(QueueUrl=url)  # moved to the dead-letter queue
    handle = sqs.start_message_move_task(SourceArn=dead_arn)["TaskHandle"]
    (task,) = sqs.list_message_move_tasks(SourceArn=dead_arn)["Results"]
    assert (task["TaskHandle"], task["Status"], task["ApproximateNumberOfMessagesMoved"]) == (handle, "COMPLETED", 2)
    for name, url in work.items():
        (back,) = sqs.receive_message(QueueUrl=url, AttributeNames=["ApproximateReceiveCount"])["Messages"]
        assert back["Body"] == f"from {name}" and back["Attributes"]["ApproximateReceiveCount"] == "1"
    assert "Messages" not in sqs.receive_message(QueueUrl=dead)
    # Sent to the dead-letter queue itself: no queue to go back to.
    sqs.send_message(QueueUrl=dead, MessageBody="orphan")
    sqs.start_message_move_task(SourceArn=dead_arn)
    task = sqs.list_message_move_tasks(SourceArn=dead_arn)["Results"][0]
    assert task["Status"] == "FAILED" and "give a DestinationArn" in task["FailureReason"]


@given(body=st.text(max_size=30) | JSON.map(json.dumps) | JSON.map(lambda v: base64.b64encode(json.dumps(
    {"body": base64.b64encode(json.dumps(v).encode()).decode(), "headers": v, "properties": {
        "body_encoding": "base64", "delivery_info": v}}).encode()).decode()))
def test_any_dead_letter_is_described_in_text_fields(body):
    found = dead_letters.describe({"Body": body, "MessageAttributes": {
        "kind": {"StringValue": "envelope", "DataType": "String"}}})
    assert all(v is None or isinstance(v, str) for k, v in found.items() if k != "receives")
    assert found["kind"] == "envelope"
