"""The assignment's design, for comparison: two plain scripts over one plain SQS queue.

    python -m bench.baseline detect QUEUE_URL   # Instance A: list, detect one by one, send names, then -1
    python -m bench.baseline text QUEUE_URL     # Instance B: poll, read text one by one, write output.txt

Same models (with the libraries' default threading, as the scripts would have it), same emulator.
Instance B keeps polling after -1 until the queue is empty: a standard queue may deliver -1 early.
"""

from __future__ import annotations

import functools
import sys

from carcelery import aws, recognizers
from carcelery.pipeline import results, images
from carcelery.settings import settings


def detect(queue_url: str) -> None:
    recognizer = recognizers.get(settings.recognizer)
    threshold = recognizers.threshold(recognizer, settings.car_threshold)
    sqs = aws.client("sqs")
    for image in images.list_images(settings.bucket, settings.key_prefix):
        ref = recognizers.Image(image.key, functools.partial(images.read, settings.bucket, image.key))
        if recognizers.car_confidence(recognizer.labels(ref)) >= threshold:
            sqs.send_message(QueueUrl=queue_url, MessageBody=image.key)
    sqs.send_message(QueueUrl=queue_url, MessageBody="-1")


def text(queue_url: str) -> None:
    recognizer = recognizers.get(settings.recognizer)
    sqs = aws.client("sqs")
    records, ended = [], False
    while True:
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10,
                                       WaitTimeSeconds=1).get("Messages", [])
        if not messages and ended:
            break
        for message in messages:
            key = message["Body"]
            if key == "-1":
                ended = True
            else:
                ref = recognizers.Image(key, functools.partial(images.read, settings.bucket, key))
                record = results.detection(key, labels=[recognizers.Label(recognizers.CAR, 100.0)], threshold=0.0)
                records.append(results.with_text(record, recognizer.text(ref)))
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    results.write(settings.output_dir, sorted(records, key=lambda r: results.natural_key(r["image"])))


if __name__ == "__main__":
    {"detect": detect, "text": text}[sys.argv[1]](sys.argv[2])
