"""The Rekognition backend: its calls (botocore Stubber, with answers shaped like AWS's) and the emulator's."""

import re

import boto3
import pytest
from botocore.stub import Stubber

from carcelery import aws
from carcelery.recognizers import Box, Image, ImageError
from carcelery.recognizers.rekognition import RekognitionRecognizer

S3_IMAGE = Image("7.jpg", lambda: pytest.fail("an S3 image must be passed by reference, not read"),
                 bucket="njit-cs-643", key="7.jpg")
BOX = {"Width": 0.2, "Height": 0.1, "Left": 0.6, "Top": 0.5}


@pytest.fixture
def stubbed():
    client = boto3.client("rekognition", region_name="us-east-1",
                          aws_access_key_id="x", aws_secret_access_key="x")
    with Stubber(client) as stub:
        yield RekognitionRecognizer(client), stub
        stub.assert_no_pending_responses()


def test_labels_by_s3_reference(stubbed):
    recognizer, stub = stubbed
    stub.add_response("detect_labels", {"Labels": [
        {"Name": "Car", "Confidence": 99.89, "Instances": [{"BoundingBox": BOX, "Confidence": 99.89}]},
        {"Name": "Vehicle", "Confidence": 99.89, "Instances": []},
    ]}, {"Image": {"S3Object": {"Bucket": "njit-cs-643", "Name": "7.jpg"}}, "MinConfidence": 50})
    labels = recognizer.labels(S3_IMAGE)
    assert [(label.name, label.confidence) for label in labels] == [("Car", 99.89), ("Vehicle", 99.89)]
    assert labels[0].boxes[0].left == 0.6


def test_text_keeps_lines_not_words(stubbed):
    recognizer, stub = stubbed
    detections = [
        {"DetectedText": "Lamborghini", "Type": "LINE", "Id": 0, "Confidence": 97.2, "Geometry": {"BoundingBox": BOX}},
        {"DetectedText": "LP 610 LB", "Type": "LINE", "Id": 1, "Confidence": 95.7, "Geometry": {"BoundingBox": BOX}},
        {"DetectedText": "Lamborghini", "Type": "WORD", "Id": 2, "ParentId": 0, "Confidence": 97.2},
        {"DetectedText": "LP", "Type": "WORD", "Id": 3, "ParentId": 1, "Confidence": 95.7},
    ]
    stub.add_response("detect_text", {"TextDetections": detections},
                      {"Image": {"S3Object": {"Bucket": "njit-cs-643", "Name": "7.jpg"}}})
    assert [line.text for line in recognizer.text(S3_IMAGE)] == ["Lamborghini", "LP 610 LB"]


@pytest.mark.parametrize("regions, sent", [
    ([Box(0.6, 0.5, 0.2, 0.1)], {"Filters": {"RegionsOfInterest": [{"BoundingBox": BOX}]}}),
    ([Box(0.0, 0.0, 0.05, 0.05)] * 11, {}),  # over DetectText's 10 regions: the whole image
])
def test_text_read_in_regions_of_interest(stubbed, regions, sent):
    recognizer, stub = stubbed
    stub.add_response("detect_text", {"TextDetections": []},
                      {"Image": {"S3Object": {"Bucket": "njit-cs-643", "Name": "7.jpg"}}, **sent})
    assert recognizer.text(S3_IMAGE, regions) == []


def test_local_files_are_sent_as_bytes(stubbed):
    recognizer, stub = stubbed
    stub.add_response("detect_text", {"TextDetections": []}, {"Image": {"Bytes": b"\xff\xd8jpeg"}})
    assert recognizer.text(Image("a.jpg", lambda: b"\xff\xd8jpeg")) == []


@pytest.mark.parametrize("code, says", [
    ("InvalidImageFormatException", "7.jpg is not a JPEG or PNG image"),
    ("ImageTooLargeException", "7.jpg is larger than Rekognition accepts"),
    ("InvalidS3ObjectException", "7.jpg cannot be read by Rekognition from S3"),
    ("InvalidParameterException", "7.jpg was refused by Rekognition"),
])
def test_image_errors_are_permanent_and_named(stubbed, code, says):
    recognizer, stub = stubbed
    stub.add_client_error("detect_labels", service_error_code=code, http_status_code=400)
    with pytest.raises(ImageError, match=says):
        recognizer.labels(S3_IMAGE)


def test_local_files_over_5_mb_are_refused_before_calling(stubbed):
    recognizer, _ = stubbed
    with pytest.raises(ImageError, match=re.escape("big.jpg is 5,242,881 bytes, over Rekognition's 5,242,880")):
        recognizer.labels(Image("big.jpg", lambda: b"x" * (5 * 1024 * 1024 + 1)))


def test_other_errors_propagate(stubbed):
    recognizer, stub = stubbed
    stub.add_client_error("detect_labels", service_error_code="ThrottlingException", http_status_code=400)
    with pytest.raises(Exception, match="ThrottlingException"):
        recognizer.labels(S3_IMAGE)


def test_calls_reach_the_emulator(emulator):
    # The emulator's Rekognition gives canned answers, with LINE and WORD detections.
    recognizer = RekognitionRecognizer(aws.client("rekognition"))
    labels = recognizer.labels(S3_IMAGE)
    assert labels and all(0 <= label.confidence <= 100 for label in labels)
    lines = [line.text for line in recognizer.text(S3_IMAGE)]
    assert lines == ["IT'S", "MONDAY", "but keep", "Smiling"]
