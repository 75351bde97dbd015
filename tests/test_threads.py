"""What a worker's threads share (the threads pool) is made once, however many threads ask at once."""

import threading
import time

from carcelery import aws, recognizers


class SlowRecognizer(recognizers.Recognizer):
    """Takes a while to make, as a recognizer loading its models or client does."""

    name, car_threshold = "slow", 90.0

    def __init__(self):
        time.sleep(0.2)

    def labels(self, image):
        return []

    def text(self, image, regions=()):
        return []


def all_at_once(make, threads=8):
    barrier, got = threading.Barrier(threads), []

    def run():
        barrier.wait()
        got.append(make())

    started = [threading.Thread(target=run) for _ in range(threads)]
    for thread in started:
        thread.start()
    for thread in started:
        thread.join()
    return got


def test_threads_share_one_client_per_service():
    aws.reset()
    got = all_at_once(lambda: aws.client("sqs"))
    assert len({id(client) for client in got}) == 1


def test_threads_share_one_recognizer(monkeypatch):
    monkeypatch.setitem(recognizers.BACKENDS, "slow", f"{__name__}:SlowRecognizer")
    try:
        got = all_at_once(lambda: recognizers.get("slow"))
        assert len({id(recognizer) for recognizer in got}) == 1
    finally:
        recognizers._made.cache_clear()
