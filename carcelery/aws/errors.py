"""Errors as types: carcelery's one error policy, and a permanent failure naming the call, resource, permission and fix.

``sort`` is the one place an error is sorted, for the tasks (``carcelery.policy``),
the transport and the dispatcher alike. Every error is one of three:

- **transient** (``Transient``): what botocore's own standard retry mode
  retries (throttling, 5xx, timeouts, connection errors); trying again later
  can succeed;
- **permanent** (``Permanent``): any other answer of an AWS service (denied,
  missing, invalid) and missing or refused credentials; no retry can fix it;
- **a bug** (``Bug``): anything else, a programming error, as final as a permanent one.

``Permanent`` and ``Bug`` are ``Failure``s, as is ``Exhausted``: a transient
error that outlasted its retries. A failure's ``str()`` is the one line to show.

The codes with a fix of their own are those of the service models
(botocore/data/{s3,sqs,dynamodb,rekognition,sns}/*/service-2.json) for the
calls the pipeline makes, and the authentication errors common to all AWS
services; ``tests/test_storage.py`` checks them against the models.
"""

from __future__ import annotations

import enum
import functools
from types import SimpleNamespace

from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError, PartialCredentialsError
from botocore.retries import standard

from ..settings import ConfigError, settings

# Refusals of a call the credentials are not allowed to make: the fix is a permission.
DENIED = frozenset({
    "AccessDenied", "AccessDeniedException", "403",  # S3 (403: HEAD, no body); JSON protocols
    "AuthorizationError",  # SNS
    "AllAccessDisabled", "KmsAccessDenied", "KMSAccessDenied", "NotAuthorized",
})

# Credentials that AWS refuses, whatever the call.
CREDENTIALS = {
    "InvalidAccessKeyId": "the AWS access key is not valid; check your AWS credentials (aws configure)",
    "InvalidClientTokenId": "the AWS access key is not valid; check your AWS credentials (aws configure)",
    "UnrecognizedClientException": "the AWS credentials are not valid; check them (aws configure)",
    "SignatureDoesNotMatch": "the AWS secret key is wrong; check your AWS credentials (aws configure)",
    "InvalidSignatureException": "the AWS secret key is wrong; check your AWS credentials (aws configure)",
    "IncompleteSignature": "the request's signature is incomplete; check your AWS credentials (aws configure)",
    "MissingAuthenticationToken": "no AWS credentials were sent; configure them (aws configure, or an instance role)",
    "ExpiredToken": "the AWS session token has expired; renew your credentials",
    "ExpiredTokenException": "the AWS session token has expired; renew your credentials",
    "RequestExpired": "the request expired before AWS got it; check the machine's clock, or renew your credentials",
    "InvalidToken": "the AWS session token is not valid; renew your credentials",
    "OptInRequired": "the AWS account is not subscribed to this service; enable it for the account",
}

# Resources that are not there (the message names the resource before).
_MISSING_OBJECT = "the object is not in the bucket (deleted since it was listed?)"
_MISSING_QUEUE = "the queue does not exist; create the queues: python -m carcelery.aws.provision"
MISSING = {
    "NoSuchBucket": "the bucket does not exist; create it (python -m carcelery.aws.provision) "
                    "or set CARCELERY_BUCKET to an existing one",
    "NoSuchKey": _MISSING_OBJECT,
    "404": _MISSING_OBJECT,
    "QueueDoesNotExist": _MISSING_QUEUE,
    # What SQS answers, depending on protocol and version, about a queue that does not exist.
    "AWS.SimpleQueueService.NonExistentQueue": _MISSING_QUEUE,
    "NonExistentQueue": _MISSING_QUEUE,
    "ResourceNotFoundException": "the table does not exist; create the tables: python -m carcelery.aws.provision",
    "ReceiptHandleIsInvalid": "the message's receipt handle is not valid (the message was received again since, "
                              "or the queue was purged)",
}

# Rekognition's answers about the image it was given: retrying gives the same answer.
IMAGE = {
    "InvalidImageFormatException": "is not a JPEG or PNG image; replace it with one",
    "ImageTooLargeException": "is larger than Rekognition accepts (15 MB in S3, 5 MB as bytes); downscale it",
    "InvalidParameterException": "was refused by Rekognition (smaller than 80 pixels a side, or over 10,000?); "
                                 "replace it with a larger image",
    "InvalidS3ObjectException": "cannot be read by Rekognition from S3; check that the object exists "
                                "and is in the same region as Rekognition",
}

# IAM actions that are not ``service:OperationName``.
_ACTIONS = {
    "ListObjectsV2": "s3:ListBucket", "ListObjects": "s3:ListBucket", "HeadBucket": "s3:ListBucket",
    "HeadObject": "s3:GetObject", "CreateMultipartUpload": "s3:PutObject", "UploadPart": "s3:PutObject",
    "CompleteMultipartUpload": "s3:PutObject",
    "SendMessageBatch": "sqs:SendMessage", "DeleteMessageBatch": "sqs:DeleteMessage",
    "ChangeMessageVisibilityBatch": "sqs:ChangeMessageVisibility",
    # A transaction is authorized by its writes' actions: the chord counter's are these.
    "TransactWriteItems": "dynamodb:PutItem and dynamodb:UpdateItem",
    "TransactGetItems": "dynamodb:GetItem",
}
# The services the pipeline calls, in the order an operation's name is looked for.
SERVICES = ("s3", "sqs", "dynamodb", "rekognition", "sns")

# What botocore's standard retry mode retries, without an operation's model.
_RETRYABLE = standard.OrRetryChecker([standard.TransientRetryableChecker(), standard.ThrottledRetryableChecker(),
                                      standard.ThrottlingStatusCodeChecker()])


class Failure(Exception):
    """What no retry will fix; ``str()`` is the one line to show (a record's reason, a log line)."""


class Kind(enum.StrEnum):
    """Why AWS refused a call for good (a ``Permanent``'s ``kind``)."""

    DENIED = "denied"  # the credentials lack a permission
    CREDENTIALS = "credentials"  # missing, refused or expired credentials
    MISSING = "missing"  # no such bucket, object, queue or table
    IMAGE = "image"  # the image, not the service (Rekognition's answer about it)
    REFUSED = "refused"  # any other refusal


class Permanent(Failure):
    """A failed AWS call that no retry can fix.

    Attributes:
      call: the operation (``GetObject``), or "" when no call was made (no credentials).
      resource: what it was called on (``s3://bucket/key``, ``queue carcelery-text``, ``table t``), or "".
      code: AWS's error code (``AccessDenied``).
      permission: the IAM action that was missing (``s3:GetObject``) when the call was denied, else "".
      fix: what to do about it, in words.
      kind: why, a ``Kind``.

    ``str()`` is the one line to show: call, resource, missing permission and fix.
    """

    def __init__(self, call: str, resource: str, code: str, fix: str, kind: Kind, permission: str = ""):
        self.call, self.resource, self.code, self.fix, self.kind, self.permission = \
            call, resource, code, fix, Kind(kind), permission
        where = " on ".join(part for part in (call, resource) if part)
        super().__init__(f"{where} failed ({code}): {fix}" if where else fix)

    def __reduce__(self):
        return type(self), (self.call, self.resource, self.code, self.fix, self.kind, self.permission)


class Bug(Failure):
    """A programming error in carcelery: the same work would fail the same way again."""

    @classmethod
    def of(cls, exc: BaseException) -> Bug:
        return cls(f"{type(exc).__name__}: {exc} (a programming error in carcelery, not retried)")


class Misconfigured(Failure):
    """A setting carcelery cannot run with (a ``settings.ConfigError``); ``str()`` names it and the fix."""


class Exhausted(Failure):
    """A transient error that was still there after the last retry."""

    @classmethod
    def of(cls, exc: BaseException, retries: int) -> Exhausted:
        return cls(f"{type(exc).__name__}: {exc} (gave up after {retries} retries)")


class Transient(Exception):
    """An error that a later try can fix (see ``transient``), raised for Celery to retry the task.

    The tasks name it in Celery's ``autoretry_for`` (``carcelery.policy``); its message
    names what failed and the error, and ``__cause__`` is the error itself.
    """


def sort(exc: BaseException, bucket: str = "", key: str = "", *, queue: str = "",
         table: str = "") -> Transient | Failure:
    """``exc`` sorted by carcelery's one error policy: what a later try may fix, or the failure it is.

    Parameters:
      exc: what a call (or the code around it) raised.
      bucket, key, queue, table: the resource it was called on, as far as the caller knows it
        (``permanent``'s).

    Returns:
      ``Transient`` (its ``__cause__`` is ``exc``): a later try can succeed;
      ``Permanent``: AWS answered and no retry can fix it; ``Misconfigured``: a setting is wrong;
      ``Bug``: anything else.
      A ``Failure`` or ``Transient`` given is returned as it is (sorted before).
    """
    if isinstance(exc, (Failure, Transient)):
        return exc
    if isinstance(exc, ConfigError):
        return Misconfigured(str(exc))
    if transient(exc):
        sorted_ = Transient(f"{type(exc).__name__}: {exc}")
        sorted_.__cause__ = exc
        return sorted_
    found = permanent(exc, bucket, key, queue=queue, table=table)
    if found is not None:
        return found
    bug = Bug.of(exc)
    bug.__cause__ = exc
    return bug


def error_code(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def queue_missing(exc: BaseException) -> bool:
    return isinstance(exc, ClientError) and MISSING.get(error_code(exc)) is _MISSING_QUEUE


def transient(exc: BaseException) -> bool:
    """Whether retrying the call later can succeed: botocore's retryable errors, and lost connections.

    Parameters:
      exc: what the call (or the code around it) raised.

    Returns:
      True for throttling, 5xx answers, timeouts and connection errors (botocore's,
      or the socket's); False for everything else, programming errors included.
    """
    if isinstance(exc, (ConnectionError, TimeoutError)):  # the socket's, under kombu's own HTTP client
        return True
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        context = standard.RetryContext(attempt_number=1, parsed_response=exc.response,
                                        http_response=SimpleNamespace(status_code=status) if status else None)
    else:
        context = standard.RetryContext(attempt_number=1, caught_exception=exc)
    return _RETRYABLE.is_retryable(context)


@functools.cache
def _service_of(operation: str) -> str:
    # Read only to explain a permanent error: a service model takes tens of milliseconds to read.
    import botocore.session
    session = botocore.session.get_session()
    return next((s for s in SERVICES if operation in session.get_service_model(s).operation_names), "")


def action(operation: str) -> str:
    """The IAM action that allows ``operation`` (``ListObjectsV2`` -> ``s3:ListBucket``), or "" if not ours."""
    if operation in _ACTIONS:
        return _ACTIONS[operation]
    service = _service_of(operation)
    return f"{service}:{operation}" if service else ""


def _resource(call: str, bucket: str, key: str, queue: str, table: str) -> str:
    # The resource of the call's service only: a caller may know a bucket while its queue call fails.
    if not (bucket or key or queue or table):
        return ""
    service = action(call).partition(":")[0] if call else ""
    if key and service in ("", "s3", "rekognition"):
        return f"s3://{bucket}/{key}"
    if bucket and service in ("", "s3", "rekognition"):
        return f"bucket {bucket!r}"
    if queue and service in ("", "sqs"):
        return f"queue {queue.rsplit('/', 1)[-1]}"  # a name, or its URL
    return f"table {table}" if table and service in ("", "dynamodb") else ""


def permanent(exc: BaseException, bucket: str = "", key: str = "", *, queue: str = "",
              table: str = "") -> Permanent | None:
    """What a failed AWS call means, if no retry can fix it.

    Parameters:
      exc: what the call raised.
      bucket, key, queue, table: the resource it was called on, as far as the caller knows it
        (a queue by name or URL).

    Returns:
      A ``Permanent`` (not raised: the caller raises it, or records it), or None when
      ``exc`` is transient or not an AWS error at all.
    """
    if isinstance(exc, Permanent):
        return exc
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return Permanent("", "", type(exc).__name__, "no AWS credentials found; configure them (aws configure, "
                         "or an instance role) or use the emulator", Kind.CREDENTIALS)
    if not isinstance(exc, ClientError) or transient(exc):
        return None
    code, call = error_code(exc), exc.operation_name
    resource = _resource(call, bucket, key, queue, table)
    if code in DENIED:
        needed = action(call)
        what = f"the credentials lack {needed}" if needed else "access was denied"
        return Permanent(call, resource, code, f"{what}; grant it (deploy/iam-policy.json, docs/aws.md)",
                         Kind.DENIED, needed)
    if code in CREDENTIALS:
        return Permanent(call, resource, code, CREDENTIALS[code], Kind.CREDENTIALS)
    if code in MISSING:
        return Permanent(call, resource, code, MISSING[code], Kind.MISSING)
    if code in IMAGE:
        return Permanent(call, resource, code, f"the image {IMAGE[code]}", Kind.IMAGE)
    message = exc.response.get("Error", {}).get("Message") or "no message"
    return Permanent(call, resource, code, f"AWS refused the request: {message}", Kind.REFUSED)


def explain(exc: BaseException, bucket: str = "", key: str = "", *, queue: str = "", table: str = "") -> str | None:
    """The one line of ``permanent(...)``: call, resource, missing permission, fix; None if not permanent."""
    found = permanent(exc, bucket, key, queue=queue, table=table)
    return None if found is None else str(found)


def unreachable(exc: EndpointConnectionError) -> str:
    """One sentence for an AWS endpoint (or the emulator) that cannot be reached, with the fix."""
    hint = "start it: python -m carcelery.embedded.emulator" if settings.target == "emulator" else "check the network"
    return f"cannot reach {settings.endpoint_url or exc.kwargs.get('endpoint_url')}; {hint}"
