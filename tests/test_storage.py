"""S3 listing, reading and uploading against the real emulator; error explanations."""

import pytest
from botocore.exceptions import ClientError, NoCredentialsError

from carcelery import aws
from carcelery.aws import errors
from carcelery.pipeline import images


def error(code):
    return ClientError({"Error": {"Code": code, "Message": code}}, "Op")


def test_listing_pages_through_any_size_and_keeps_images(bucket):
    s3 = aws.client("s3")
    for i in range(1005):  # more than one page of 1000
        s3.put_object(Bucket=bucket, Key=f"p/{i}.jpg", Body=b"x")
    s3.put_object(Bucket=bucket, Key="p/notes.txt", Body=b"x")
    s3.put_object(Bucket=bucket, Key="p/data.JSON", Body=b"{}")
    s3.put_object(Bucket=bucket, Key="q/9.PNG", Body=b"x")
    listed = list(images.list_images(bucket, "p/"))
    assert len(listed) == 1005
    assert all(image.etag and '"' not in image.etag and image.size == 1 for image in listed)
    assert [image.key for image in images.list_images(bucket, "q/")] == ["q/9.PNG"]


def test_upload_folder_and_read_back(bucket, seed_dir, tmp_path):
    keys = images.upload_folder(seed_dir, bucket, "in/")
    assert sorted(keys) == sorted(f"in/{n}.jpg" for n in range(1, 11))
    assert images.read(bucket, "in/4.jpg") == (seed_dir / "4.jpg").read_bytes()
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        images.upload_folder(tmp_path / "nope", bucket)


def test_missing_bucket_is_explained(emulator):
    with pytest.raises(ClientError) as caught:
        list(images.list_images("no-such-bucket-here"))
    message = errors.explain(caught.value, "no-such-bucket-here")
    assert message.startswith("ListObjectsV2 on bucket 'no-such-bucket-here' failed (NoSuchBucket): "
                              "the bucket does not exist") and "CARCELERY_BUCKET" in message


@pytest.mark.parametrize("exc, says", [
    (error("InvalidAccessKeyId"), "access key is not valid"),
    (error("SignatureDoesNotMatch"), "secret key is wrong"),
    (error("ExpiredToken"), "expired"),
    (error("AccessDenied"), "denied"),
    (NoCredentialsError(), "no AWS credentials"),
])
def test_permanent_errors_have_a_fix(exc, says):
    assert says in errors.explain(exc, "b", "k")


def test_transient_errors_have_none():
    assert errors.explain(error("ThrottlingException")) is None
    assert errors.explain(ConnectionResetError()) is None
