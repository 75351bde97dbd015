"""The IAM policy (deploy/iam-policy.json: docs/aws.md's and the CloudFormation template's) lists exactly
the AWS calls the code makes, as the emulator records them."""

import base64
import json
import re
import time
import urllib.parse
import urllib.request

from test_pipeline import dispatch, own_stack

from carcelery import aws
from carcelery.embedded.demo import ROOT
from carcelery.pipeline import results


def recorder(emulator, verb):
    url = f"http://127.0.0.1:{emulator.env['CARCELERY_EMULATOR_PORT']}/moto-api/recorder/{verb}"
    with urllib.request.urlopen(urllib.request.Request(url, method="GET" if verb.startswith("download") else "POST")) as r:
        return r.read().decode()


def recorded(text):
    """The recorded requests. moto appends an entry and its newline in two writes,
    so two threads' entries can share a line: read them as a stream of JSON values."""
    decoder, at = json.JSONDecoder(), 0
    while True:
        at = len(text) - len(text[at:].lstrip())
        if at == len(text):
            return
        entry, at = decoder.raw_decode(text, at)
        yield entry


# SQS's batch calls are authorized by the single call's action; DynamoDB's
# transactions by the actions of their writes (here a PutItem and an UpdateItem).
BATCH_ACTIONS = {"sqs:SendMessageBatch": "sqs:SendMessage", "sqs:DeleteMessageBatch": "sqs:DeleteMessage",
                 "sqs:ChangeMessageVisibilityBatch": "sqs:ChangeMessageVisibility",
                 "dynamodb:TransactWriteItems": "dynamodb:UpdateItem"}


def body(entry) -> str:
    """A recorded request's body, as text."""
    text = entry["body"] or ""
    return base64.b64decode(text).decode(errors="replace") if entry.get("body_encoded") else text


def action(entry) -> str:
    """The IAM action of one recorded request."""
    headers = {k.lower(): v for k, v in entry["headers"].items()}
    service = re.search(r"Credential=[^/]+/[^/]+/[^/]+/([^/]+)/", headers.get("authorization", "")).group(1)
    target = headers.get("x-amz-target")
    if target:
        name = f"{service}:{target.split('.')[-1]}"
        return BATCH_ACTIONS.get(name, name)
    url = urllib.parse.urlsplit(entry["url"])
    query = urllib.parse.parse_qs(url.query)
    if service != "s3":
        return f"{service}:{(query.get('Action') or urllib.parse.parse_qs(body(entry))['Action'])[0]}"
    parts = [p for p in url.path.split("/") if p]
    if len(parts) == 1:  # the bucket itself
        return {"GET": "s3:ListBucket", "HEAD": "s3:ListBucket", "PUT": "s3:CreateBucket"}[entry["method"]]
    return {"GET": "s3:GetObject", "HEAD": "s3:GetObject", "PUT": "s3:PutObject"}[entry["method"]]


# Made for us, not by our code: Rekognition reads S3 objects with the caller's
# rights, and kombu returns a message to its queue (visibility 0) when a worker is lost.
ON_OUR_BEHALF = {"s3:GetObject", "sqs:ChangeMessageVisibility"}


def policy_actions():
    policy = json.loads((ROOT / "deploy" / "iam-policy.json").read_text())
    return {a for statement in policy["Statement"] for a in statement["Action"]}


def test_iam_policy_is_exactly_what_the_code_calls(emulator, seed_dir, tmp_path):
    recorder(emulator, "reset-recording")
    recorder(emulator, "start-recording")
    try:
        # Tables of its own too: the first provision creates them (and enables the results' TTL).
        own = f"carcelery-iam-{tmp_path.name[-8:].lower().replace('_', '-')}"
        with own_stack(tmp_path, CARCELERY_RECOGNIZER="rekognition", CARCELERY_CAR_THRESHOLD="0", CARCELERY_BUCKET=own,
                       **{f"CARCELERY_{table}_TABLE": f"{own}-{table.lower()}" for table in ("RESULTS", "LEDGER", "RECORDS")}) as stack:
            for _ in range(2):  # creates, then finds and updates
                assert stack.run("carcelery.aws.provision").returncode == 0
            stack.start_worker("worker_a", "detect", 1)
            stack.start_worker("worker_b", "text", 1)
            done = dispatch(stack, "--from", str(seed_dir))
            assert done.returncode == 0, done.stderr
            assert dispatch(stack).returncode == 0  # a second run: the ledger's refusals too
            # S3 events, turned on by the bucket's owner (not recorded: the role configures no bucket),
            # then consumed by Instance A's worker: its calls are recorded.
            recorder(emulator, "stop-recording")
            assert stack.run("carcelery.aws.provision", "--events").returncode == 0
            stack.stop("worker_a")
            stack.start_worker("worker_a", "detect", 1)
            recorder(emulator, "start-recording")
            aws.client("s3").put_object(Bucket=own, Key="new.jpg", Body=(seed_dir / "1.jpg").read_bytes())
            deadline = time.monotonic() + 120
            while not any(r["image"] == "new.jpg" for r in results.read_records(stack.output_dir)):
                assert time.monotonic() < deadline, "new.jpg's record did not come by its S3 event"
                time.sleep(0.5)
            # Broadcasts (remote control here, events while someone watches) are SNS publishes.
            ping = stack.run("celery", "-A", "carcelery", "inspect", "ping", "--timeout", "10")
            assert ping.returncode == 0 and "worker_b@" in ping.stdout, ping.stdout + ping.stderr
    finally:
        recorder(emulator, "stop-recording")
    called = {action(entry) for entry in recorded(recorder(emulator, "download-recording"))}
    assert called | ON_OUR_BEHALF == policy_actions()
