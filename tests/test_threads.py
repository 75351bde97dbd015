"""What a worker's threads share (the threads pool) is made once, however many threads ask at once, and answers each thread for its own call."""

import functools
import os
import threading
import time
from pathlib import Path

from carcelery import aws, recognizers
from carcelery.pipeline import latest
from carcelery.recognizers.imaging import decode
from carcelery.recognizers.local import WHOLE


class SlowRecognizer(recognizers.Recognizer):
    """Takes a while to make, as a recognizer loading its models or client does."""

    name, car_threshold = "slow", 90.0

    def __init__(self):
        time.sleep(0.2)

    def labels(self, image):
        return []

    def text(self, image, regions=()):
        return []


def all_threads(*works):
    """Threads running ``works``, started together."""
    barrier = threading.Barrier(len(works))

    def run(work):
        barrier.wait()
        work()

    started = [threading.Thread(target=run, args=(work,)) for work in works]
    for thread in started:
        thread.start()
    return started


def all_at_once(make, threads=8):
    got = []
    for thread in all_threads(*[lambda: got.append(make())] * threads):
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


def test_threads_sharing_the_local_recognizer_get_each_image_s_own_answer(seed_dir):
    # The threads pool's tasks share the process's one recognizer: its detector
    # is one TFLite interpreter, whose input and output tensors are the interpreter's.
    local = recognizers.get("local")
    names = sorted(path.name for path in seed_dir.glob("*.jpg"))
    images = {name: (seed_dir / name).read_bytes() for name in names}

    def detections(name):
        return local._detect(decode(recognizers.Image(name, lambda: images[name])), WHOLE)

    serial = {name: detections(name) for name in names}
    threads, got = 8, []

    def run(offset):
        for name in names[offset:] + names[:offset]:
            try:
                got.append((name, detections(name)))
            except Exception as exc:  # noqa: BLE001 - an interpreter used by two threads at once may raise
                got.append((name, repr(exc)))

    for thread in all_threads(*[functools.partial(run, n) for n in range(threads)]):
        thread.join()
    assert len(got) == threads * len(names)
    assert [name for name, answer in got if answer != serial[name]] == []


def test_terminators_in_two_threads_of_one_process_link_the_outputs_at_once(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    errors = []

    def link(target):
        try:
            for _ in range(300):
                latest._link(tmp_path / "latest", Path(target))
        except OSError as exc:
            errors.append(exc)

    for thread in all_threads(lambda: link("a"), lambda: link("b")):
        thread.join()
    assert errors == []
    assert os.readlink(tmp_path / "latest") in ("a", "b")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "latest"], "no temporary link left"
