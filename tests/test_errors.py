"""AWS errors sorted as botocore and the service models sort them: transient, permanent, or a programming error."""

import pickle

import botocore.session
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError, ReadTimeoutError

from carcelery.aws import errors

# The calls the pipeline makes (deploy/iam-policy.json's actions, by operation).
CALLS = {
    "s3": ["ListObjectsV2", "GetObject", "HeadObject", "PutObject", "HeadBucket", "CreateBucket"],
    "sqs": ["GetQueueUrl", "GetQueueAttributes", "SendMessage", "SendMessageBatch", "ReceiveMessage",
            "DeleteMessage", "DeleteMessageBatch", "ChangeMessageVisibility", "ChangeMessageVisibilityBatch",
            "ListQueues", "CreateQueue", "DeleteQueue", "TagQueue", "ListQueueTags", "StartMessageMoveTask"],
    "dynamodb": ["GetItem", "PutItem", "UpdateItem", "Query", "BatchGetItem", "BatchWriteItem",
                 "TransactWriteItems", "DescribeTable"],
    "rekognition": ["DetectLabels", "DetectText"],
    "sns": ["CreateTopic", "Publish", "Subscribe", "Unsubscribe", "ListSubscriptionsByTopic", "ListTopics"],
}
# AWS's errors common to every service (authentication), which the service models leave out.
COMMON = {"AccessDenied", "AccessDeniedException", "403", "404", "NotAuthorized", "OptInRequired",
          "InvalidAccessKeyId", "InvalidClientTokenId", "UnrecognizedClientException", "SignatureDoesNotMatch",
          "InvalidSignatureException", "IncompleteSignature", "MissingAuthenticationToken", "ExpiredToken",
          "RequestExpired", "InvalidToken", "AllAccessDisabled", "AWS.SimpleQueueService.NonExistentQueue",
          "NonExistentQueue"}


def client_error(code, operation="GetObject", status=400):
    return ClientError({"Error": {"Code": code, "Message": f"{code} said"},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, operation)


def modeled_errors():
    session = botocore.session.get_session()
    for service, operations in CALLS.items():
        model = session.get_service_model(service)
        for operation in operations:
            for shape in model.operation_model(operation).error_shapes:
                yield operation, shape.metadata.get("error", {}).get("code") or shape.name


def test_every_modeled_error_of_our_calls_is_transient_or_permanent():
    sorted_ = {}
    for operation, code in modeled_errors():
        exc = client_error(code, operation)
        assert errors.transient(exc) != (errors.permanent(exc) is not None), (operation, code)
        sorted_[code] = errors.transient(exc)
    assert sorted_["ProvisionedThroughputExceededException"] and sorted_["RequestThrottled"]
    assert not sorted_["NoSuchKey"] and not sorted_["InvalidImageFormatException"]


def test_codes_with_a_fix_are_aws_codes():
    known = {code for _, code in modeled_errors()} | COMMON
    session = botocore.session.get_session()
    known |= {shape.metadata.get("error", {}).get("code") or shape.name
              for service in ("sts", "sns") for shape in session.get_service_model(service).error_shapes}
    named = errors.DENIED | set(errors.CREDENTIALS) | set(errors.MISSING) | set(errors.IMAGE)
    assert named <= known, named - known


@pytest.mark.parametrize("exc", [
    client_error("ThrottlingException", "DetectLabels"),
    client_error("SlowDown", "GetObject", 503),
    client_error("InternalServerError", "PutItem", 500),
    client_error("Whatever", "SendMessage", 502),
    client_error("RequestTimeout", "GetObject"),
    EndpointConnectionError(endpoint_url="http://127.0.0.1:1"),
    ReadTimeoutError(endpoint_url="http://127.0.0.1:1"),
    ConnectionResetError(),
    TimeoutError(),
])
def test_transient(exc):
    assert errors.transient(exc) and errors.permanent(exc) is None and errors.explain(exc) is None


@pytest.mark.parametrize("exc", [KeyError("labels"), TypeError("x"), ValueError("y")])
def test_programming_errors_are_neither(exc):
    assert not errors.transient(exc) and errors.permanent(exc) is None


@pytest.mark.parametrize("code, operation, kwargs, permission, says", [
    ("AccessDeniedException", "DetectLabels", {"bucket": "b", "key": "k.jpg"}, "rekognition:DetectLabels",
     "DetectLabels on s3://b/k.jpg failed (AccessDeniedException): the credentials lack rekognition:DetectLabels"),
    ("AccessDenied", "GetObject", {"bucket": "b", "key": "k.jpg"}, "s3:GetObject",
     "GetObject on s3://b/k.jpg failed (AccessDenied): the credentials lack s3:GetObject; grant it"),
    ("AccessDenied", "ListObjectsV2", {"bucket": "b"}, "s3:ListBucket", "ListObjectsV2 on bucket 'b'"),
    ("AccessDenied", "DeleteMessageBatch", {"queue": "https://sqs/1/carcelery-text"}, "sqs:DeleteMessage",
     "DeleteMessageBatch on queue carcelery-text failed (AccessDenied): the credentials lack sqs:DeleteMessage"),
    ("AccessDeniedException", "PutItem", {"table": "carcelery-records"}, "dynamodb:PutItem",
     "PutItem on table carcelery-records"),
    ("AccessDeniedException", "TransactWriteItems", {"table": "t"}, "dynamodb:PutItem and dynamodb:UpdateItem", ""),
])
def test_denied_names_call_resource_permission_and_fix(code, operation, kwargs, permission, says):
    found = errors.permanent(client_error(code, operation, 403), **kwargs)
    assert (found.kind, found.call, found.code, found.permission) == ("denied", operation, code, permission)
    assert says in str(found) and "deploy/iam-policy.json" in str(found) and "\n" not in str(found)


@pytest.mark.parametrize("code, kind, says", [
    ("ExpiredTokenException", "credentials", "session token has expired"),
    ("ExpiredToken", "credentials", "session token has expired"),
    ("UnrecognizedClientException", "credentials", "credentials are not valid"),
    ("InvalidImageFormatException", "image", "not a JPEG or PNG"),
    ("ImageTooLargeException", "image", "larger than Rekognition accepts"),
    ("InvalidParameterException", "image", "refused by Rekognition"),
    ("ValidationException", "refused", "AWS refused the request: ValidationException said"),
])
def test_permanent_kinds(code, kind, says):
    found = errors.permanent(client_error(code, "DetectText"), "b", "k.jpg")
    assert found.kind == kind and says in str(found) and str(found).startswith("DetectText on s3://b/k.jpg")


def test_missing_resources_and_credentials():
    assert "GetQueueUrl on queue carcelery-x failed (AWS.SimpleQueueService.NonExistentQueue): the queue does not" \
        in errors.explain(
        client_error("AWS.SimpleQueueService.NonExistentQueue", "GetQueueUrl"), queue="carcelery-x")
    assert errors.queue_missing(client_error("QueueDoesNotExist", "GetQueueUrl"))
    assert "Query on table t failed (ResourceNotFoundException): the table does not exist" in errors.explain(
        client_error("ResourceNotFoundException", "Query"), table="t")
    assert errors.permanent(NoCredentialsError()).kind == "credentials"


def test_permanent_survives_pickling_and_is_its_own_classification():
    found = errors.permanent(client_error("AccessDenied", "PutObject", 403), "out", "run/output.txt")
    again = pickle.loads(pickle.dumps(found))  # noqa: S301 - our own object: Celery's pool pickles exceptions
    assert str(again) == str(found) and again.permission == "s3:PutObject"
    assert errors.permanent(found) is found


def test_the_resource_named_is_the_failed_calls():
    # provision and dispatch know the bucket; a queue or table call failing is not about it.
    found = errors.permanent(client_error("AccessDenied", "CreateQueue", 403), "images")
    assert str(found).startswith("CreateQueue failed (AccessDenied): the credentials lack sqs:CreateQueue")
    assert errors.permanent(client_error("AccessDenied", "ListObjectsV2", 403), "images").resource == "bucket 'images'"


@pytest.mark.parametrize("exc, sorted_as", [
    (client_error("SlowDown", "GetObject", 503), errors.Transient),
    (EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), errors.Transient),
    (ConnectionResetError(), errors.Transient),
    (client_error("AccessDenied"), errors.Permanent),
    (NoCredentialsError(), errors.Permanent),
    (KeyError("labels"), errors.Bug),
])
def test_sort_is_the_one_policy_and_its_answers_are_types(exc, sorted_as):
    found = errors.sort(exc, "b", "k.jpg")
    assert type(found) is sorted_as
    assert (found.__cause__ is exc) if sorted_as is not errors.Permanent else found.call in ("GetObject", "")
    assert errors.sort(found) is found, "sorted once: a sorted error is what it is"


def test_failures_are_one_line_and_travel():
    bug, exhausted = errors.Bug.of(KeyError("labels")), errors.Exhausted.of(ConnectionResetError("reset"), 5)
    assert str(bug) == "KeyError: 'labels' (a programming error in carcelery, not retried)"
    assert str(exhausted) == "ConnectionResetError: reset (gave up after 5 retries)"
    for failure in (bug, exhausted, errors.permanent(client_error("AccessDenied"), "b", "k.jpg")):
        again = pickle.loads(pickle.dumps(failure))  # noqa: S301 - our own object: Celery's pool pickles exceptions
        assert isinstance(failure, errors.Failure) and str(again) == str(failure)
    assert errors.permanent(client_error("AccessDenied")).kind is errors.Kind.DENIED


def test_only_sort_decides_what_is_transient():
    """The one policy: no other module asks ``transient`` itself (a copy of the sorting, as tasks, runs, acks,
    receiving and the dispatcher each had)."""
    import ast
    from pathlib import Path

    package = Path(errors.__file__).parents[1]
    asking = [f"{path.relative_to(package.parent)}:{node.lineno}" for path in sorted(package.rglob("*.py"))
              if path != Path(errors.__file__)
              for node in ast.walk(ast.parse(path.read_text()))
              if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "transient"]
    assert asking == [], f"sort errors with aws.errors.sort: {asking}"


def test_a_setting_carcelery_cannot_run_with_is_misconfigured_not_a_bug():
    from carcelery.settings import ConfigError

    found = errors.sort(ConfigError("CARCELERY_X is not set: set it"))
    assert isinstance(found, errors.Misconfigured) and str(found) == "CARCELERY_X is not set: set it"
