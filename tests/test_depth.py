"""Queue depths from SQS, on the emulator."""

import uuid

from carcelery import aws
from carcelery.commands.depth import Depth, depths


def test_depths_of_a_prefix_queues(emulator):
    prefix = f"d{uuid.uuid4().hex[:8]}-"
    sqs = aws.client("sqs")
    busy = sqs.create_queue(QueueName=f"{prefix}detect")["QueueUrl"]
    sqs.create_queue(QueueName=f"{prefix}text")
    for n in range(3):
        sqs.send_message(QueueUrl=busy, MessageBody=str(n))
    sqs.receive_message(QueueUrl=busy, MaxNumberOfMessages=1)
    assert depths(prefix) == [Depth(f"{prefix}detect", 2, 1, 0), Depth(f"{prefix}text", 0, 0, 0)]
