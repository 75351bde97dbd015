"""The records table: the store the outputs are made from, read a bucket at a time in natural order."""

import random
import uuid

from carcelery.pipeline import records, results
from carcelery.pipeline.images import S3Image


def test_order_sorts_as_natural_order():
    keys = ["10.jpg", "2.jpg", "1.jpg", "a/11.png", "a/9.png", "A/10.png", "x1y.jpg", "x1y2.jpg", "x1.jpg",
            "007.jpg", "7b.jpg", "b.jpg", "é/1.jpg", "z" * 2000 + "1.jpg", "img 99 v2.jpg", "img 100 v1.jpg"]
    shuffled = random.Random(1).sample(keys, len(keys))
    # DynamoDB sorts strings by their UTF-8 bytes.
    by_order = sorted(shuffled, key=lambda k: records.order(k).encode())
    assert [results.natural_key(k) for k in by_order] == sorted(results.natural_key(k) for k in keys)
    assert len({records.order(k) for k in keys}) == len(keys)
    assert max(len(records.order(k).encode()) for k in keys) <= 1024, "DynamoDB's range key limit"


def test_a_bucket_is_read_in_order_page_by_page_with_pending_ones_failed_once(emulator):
    bucket, run = f"r-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex[:12]
    # Enough records, with big enough labels, for several 1 MB pages.
    images = [S3Image(bucket, f"{n}.jpg", "e", 1) for n in range(1, 1201)]
    records.put_pending(images, run)
    label = {"name": "Car", "confidence": 99.0, "boxes": [{"left": 0.1, "top": 0.1, "width": 0.5, "height": 0.5}] * 20}
    for image in images[1:]:
        done = results.detection(image.key, bucket=bucket, key=image.key, etag="e", labels=[], threshold=70)
        records.put({**done, "labels": [label]}, run)
    records.put(results.detection("other.jpg", bucket="elsewhere", key="other.jpg", labels=[], threshold=70), run)
    got = list(records.read(bucket))
    assert [r["image"] for r in got] == [i.key for i in images]
    assert [r["image"] for r in records.read(bucket, "12")][:3] == ["12.jpg", "120.jpg", "121.jpg"]
    assert [r["image"] for r in records.pending(bucket, run)] == ["1.jpg"]
    assert list(records.pending(bucket, "another-run")) == []
    (pending,) = records.pending(bucket, run)
    assert records.fail(pending, run, "no result") is True
    assert records.fail(pending, run, "no result") is False, "failed once: no longer pending"
    assert next(records.read(bucket))["error"] == {"stage": "result", "reason": "no result"}


def test_a_run_past_its_deadline_stores_its_missing_images_as_failed_with_why(emulator):
    from carcelery.pipeline import runs

    bucket, run = f"r-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex[:12]
    records.put_pending([S3Image(bucket, "1.jpg", "e", 1), S3Image(bucket, "2.jpg", "e", 1)], run)
    records.put(results.detection("1.jpg", bucket=bucket, key="1.jpg", etag="e", labels=[], threshold=70), run)
    assert runs.fail_missing({"id": run, "bucket": bucket, "prefix": ""}) == 1
    got = {r["image"]: r for r in records.read(bucket)}
    assert "error" not in got["1.jpg"]
    assert got["2.jpg"]["error"]["stage"] == "result"
    assert got["2.jpg"]["error"]["reason"].startswith(f"no result: no part of run {run} was done for ")
    assert runs.fail_missing({"id": run, "bucket": bucket, "prefix": ""}) == 0, "once"


def test_an_ended_runs_own_images_still_pending_are_its_failures_and_another_runs_are_not(emulator):
    from carcelery.pipeline import runs

    bucket, run, other = f"r-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex[:12], uuid.uuid4().hex[:12]
    records.put_pending([S3Image(bucket, "1.jpg", "e", 1), S3Image(bucket, "2.jpg", "e", 1)], run)
    records.put_pending([S3Image(bucket, "sub/3.jpg", "e", 1)], other)  # a run over a narrower prefix, going
    records.put(results.detection("1.jpg", bucket=bucket, key="1.jpg", etag="e", labels=[], threshold=70), run)
    count, failed = runs.own_failures({"id": run, "bucket": bucket, "prefix": ""})
    assert (count, [f["image"] for f in failed]) == (1, ["2.jpg"])
    assert failed[0]["reason"].startswith("no result stored")
