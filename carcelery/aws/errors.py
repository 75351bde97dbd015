"""AWS errors in words: one sentence naming the resource and the fix.

Sorts errors into permanent ones (no retry can fix them: a missing bucket or
queue, a wrong credential) and the others, which callers retry.
"""

from __future__ import annotations

from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

from ..settings import settings

# Codes that no retry can fix, with what the person running it should do.
_FIXES = {
    "NoSuchBucket": "bucket {bucket!r} does not exist; create it (python -m carcelery.aws.provision) "
                    "or set CARCELERY_BUCKET to an existing one",
    "NoSuchKey": "object {key!r} is not in bucket {bucket!r} (deleted since it was listed?)",
    "404": "object {key!r} is not in bucket {bucket!r} (deleted since it was listed?)",
    "AccessDenied": "access to {what} was denied; grant the calls listed in deploy/iam-policy.json (docs/aws.md)",
    "403": "access to {what} was denied; grant the calls listed in deploy/iam-policy.json (docs/aws.md)",
    "InvalidAccessKeyId": "the AWS access key is not valid; check your AWS credentials (aws configure)",
    "SignatureDoesNotMatch": "the AWS secret key is wrong; check your AWS credentials (aws configure)",
    "ExpiredToken": "the AWS session token has expired; renew your credentials",
    "UnrecognizedClientException": "the AWS credentials are not valid; check them (aws configure)",
}
PERMANENT = frozenset(_FIXES)


def error_code(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


# What SQS answers, depending on protocol and version, about a queue that does not exist.
QUEUE_MISSING = frozenset({"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist", "NonExistentQueue"})


def queue_missing(exc: Exception) -> bool:
    return error_code(exc) in QUEUE_MISSING


def explain(exc: Exception, bucket: str = "", key: str = "") -> str | None:
    """One sentence naming the resource and the fix, for errors no retry can fix; None for the others."""
    if isinstance(exc, NoCredentialsError):
        return "no AWS credentials found; configure them (aws configure, or an instance role) or use the emulator"
    fix = _FIXES.get(error_code(exc))
    if fix is None:
        return None
    what = f"s3://{bucket}/{key}" if key else f"bucket {bucket!r}" if bucket else "the AWS resource"
    return fix.format(bucket=bucket, key=key, what=what)


def unreachable(exc: EndpointConnectionError) -> str:
    """One sentence for an AWS endpoint (or the emulator) that cannot be reached, with the fix."""
    hint = "start it: python -m carcelery.embedded.emulator" if settings.target == "emulator" else "check the network"
    return f"cannot reach {settings.endpoint_url or exc.kwargs.get('endpoint_url')}; {hint}"
