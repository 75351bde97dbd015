"""What an image may cost a worker: objects read up to CARCELERY_MAX_IMAGE_BYTES, never more, at every stage.

The decode's bound: tests/test_imaging.py.
"""

import io

import pytest

from carcelery import aws
from carcelery.pipeline import images, results
from carcelery.pipeline.images import ObjectTooLarge
from carcelery.recognizers import ImageError
from carcelery.settings import settings


class Body(io.BytesIO):
    """A GetObject body that counts the bytes asked of it."""

    asked: list[int | None]

    def read(self, size: int | None = -1) -> bytes:
        self.asked.append(size)
        return super().read(size)


class S3:
    """A client whose GetObject answers ``data``, with the Content-Length ``length`` (default: the truth)."""

    def __init__(self, data: bytes, length: int | None = None):
        self.body, self.length = Body(data), len(data) if length is None else length
        self.body.asked = []

    def get_object(self, Bucket: str, Key: str) -> dict:
        return {"Body": self.body, "ContentLength": self.length}


@pytest.fixture
def s3(monkeypatch):
    def with_object(data: bytes, length: int | None = None) -> S3:
        client = S3(data, length)
        monkeypatch.setattr(aws, "client", lambda service: client)
        return client

    return with_object


def test_an_object_up_to_the_limit_is_read_whole(s3):
    client = s3(b"x" * 100)
    assert images.read("b", "k.jpg", limit=100) == b"x" * 100
    assert client.body.closed


def test_a_larger_object_is_refused_unread(s3):
    client = s3(b"x" * 101)
    with pytest.raises(ObjectTooLarge, match=r"^0.jpg is 101 bytes, over CARCELERY_MAX_IMAGE_BYTES \(100\): not read"):
        images.read("b", "0.jpg", limit=100)
    assert client.body.asked == [] and client.body.closed


def test_a_body_longer_than_its_header_said_is_read_no_further_than_the_limit(s3):
    client = s3(b"x" * 10_000, length=10)
    with pytest.raises(ObjectTooLarge, match="over 100 bytes"):
        images.read("b", "0.jpg", limit=100)
    assert client.body.asked == [101]


def test_the_limit_is_the_setting_by_default_and_a_failure_of_the_image(s3):
    client = s3(b"", length=settings.max_image_bytes + 1)
    with pytest.raises(ImageError):  # what the tasks record as the image's failure, the run going on
        images.read("b", "0.jpg")
    assert client.body.asked == []
    assert settings.max_image_bytes == 50 * 1024 * 1024


def test_an_object_over_the_limit_fails_its_image_unread_and_the_run_goes_on(pipeline, bucket, seed_dir):
    s3 = aws.client("s3")
    s3.put_object(Bucket=bucket, Key="4.jpg", Body=(seed_dir / "4.jpg").read_bytes())
    s3.put_object(Bucket=bucket, Key="0.jpg", Body=b"\xff\xd8" + bytes(settings.max_image_bytes))
    done = pipeline.run("carcelery.dispatch", "--bucket", bucket, "--wait", "--timeout", "300")
    assert done.returncode == 1, done.stdout + done.stderr
    got = {r["image"]: r for r in results.read_records(pipeline.output_dir)}
    reason = f"0.jpg is {settings.max_image_bytes + 2:,} bytes, over CARCELERY_MAX_IMAGE_BYTES"
    assert got["0.jpg"]["error"]["stage"] == "detect" and got["0.jpg"]["error"]["reason"].startswith(reason)
    assert "error" not in got["4.jpg"]
    assert (pipeline.output_dir / results.OUTPUT).read_text().startswith("4.jpg: ")
    assert '<figure data-image="0.jpg"><div class="pic"><em>(no preview)</em>' in \
        (pipeline.output_dir / results.REPORT).read_text()
