"""The IAM policies, checked against the AWS calls the code makes, as the emulator records them:
deploy/iam-policy.json (the runtime's: workers, dispatcher, operator commands; the template's role) allows
exactly what they call, on the resources they call it on, and nothing only provisioning needs;
deploy/iam-provision-policy.json allows exactly what ``provision`` and ``dispatch --from`` call."""

import base64
import contextlib
import fnmatch
import json
import re
import time
import urllib.parse
import urllib.request

from test_deploy import policy_file
from test_pipeline import dispatch, own_stack

from carcelery import aws
from carcelery.aws import provision
from carcelery.pipeline import images, results

REGION, ACCOUNT = "us-east-1", "123456789012"


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


@contextlib.contextmanager
def recording(emulator):
    """The (action, resource ARN) of every request made to the emulator within, in a set given at the start."""
    calls = set()
    recorder(emulator, "reset-recording")
    recorder(emulator, "start-recording")
    try:
        yield calls
    finally:
        recorder(emulator, "stop-recording")
        calls.update(call for entry in recorded(recorder(emulator, "download-recording")) for call in requested(entry))


# SQS's batch calls are authorized by the single call's action; DynamoDB's
# transactions by the actions of their writes (here a PutItem and an UpdateItem).
BATCH_ACTIONS = {"sqs:SendMessageBatch": "sqs:SendMessage", "sqs:DeleteMessageBatch": "sqs:DeleteMessage",
                 "sqs:ChangeMessageVisibilityBatch": "sqs:ChangeMessageVisibility"}
TRANSACTION = {"Put": "dynamodb:PutItem", "Update": "dynamodb:UpdateItem", "Delete": "dynamodb:DeleteItem",
               "ConditionCheck": "dynamodb:ConditionCheckItem"}


def body(entry) -> str:
    """A recorded request's body, as text."""
    text = entry["body"] or ""
    return base64.b64decode(text).decode(errors="replace") if entry.get("body_encoded") else text


def arn(service: str, name: str) -> str:
    return f"arn:aws:{service}:{REGION}:{ACCOUNT}:{name}"


def requested(entry):
    """The (IAM action, resource ARN) pairs one recorded request needs."""
    headers = {k.lower(): v for k, v in entry["headers"].items()}
    service = re.search(r"Credential=[^/]+/[^/]+/[^/]+/([^/]+)/", headers.get("authorization", "")).group(1)
    url = urllib.parse.urlsplit(entry["url"])
    if service == "s3":
        bucket, _, key = url.path.lstrip("/").partition("/")
        if entry["method"] == "POST" and "delete" in urllib.parse.parse_qs(url.query, keep_blank_values=True):
            # DeleteObjects is authorized as a DeleteObject of each key it names.
            return [("s3:DeleteObject", f"arn:aws:s3:::{bucket}/{name}")
                    for name in re.findall(r"<Key>(.*?)</Key>", body(entry))]
        verbs = {"GET": "s3:GetObject", "HEAD": "s3:GetObject", "PUT": "s3:PutObject"} if key else \
            {"GET": "s3:ListBucket", "HEAD": "s3:ListBucket", "PUT": "s3:CreateBucket"}
        return [(verbs[entry["method"]], f"arn:aws:s3:::{bucket}" + (f"/{key}" if key else ""))]
    target = headers.get("x-amz-target")
    if target:  # JSON protocols: SQS, DynamoDB, Rekognition
        operation, params = target.split(".")[-1], json.loads(body(entry) or "{}")
        action = BATCH_ACTIONS.get(f"{service}:{operation}", f"{service}:{operation}")
        if service == "sqs":
            queue = params.get("QueueName") or params.get("QueueUrl", "").rsplit("/", 1)[-1] or \
                params.get("SourceArn", "").rsplit(":", 1)[-1]
            return [(action, arn("sqs", queue) if queue else "*")]
        if service == "dynamodb":
            if operation == "TransactWriteItems":
                return [(TRANSACTION[kind], arn("dynamodb", f"table/{write['TableName']}"))
                        for item in params["TransactItems"] for kind, write in item.items()]
            tables = [params["TableName"]] if "TableName" in params else list(params.get("RequestItems", {}))
            return [(action, arn("dynamodb", f"table/{table}")) for table in tables]
        return [(action, "*")]  # Rekognition: no resource
    form = urllib.parse.parse_qs(url.query) | urllib.parse.parse_qs(body(entry))
    operation = form["Action"][0]
    # Unsubscribe has no resource type in IAM (Service Authorization Reference): only "*" allows it.
    topic = "*" if operation == "Unsubscribe" else (form.get("TopicArn") or [None])[0] \
        or (arn("sns", form["Name"][0]) if "Name" in form else "*")
    return [(f"{service}:{operation}", topic)]


def action(entry) -> str:
    """The IAM action of one recorded request (a transaction's first)."""
    return requested(entry)[0][0]


# Made for us, not by our code: Rekognition reads S3 objects with the caller's
# rights, and kombu returns a message to its queue (visibility 0) when a worker is lost.
ON_OUR_BEHALF = {"s3:GetObject", "sqs:ChangeMessageVisibility"}


def allowed(policy: dict, action: str, resource: str) -> bool:
    resources = lambda s: [s["Resource"]] if isinstance(s["Resource"], str) else s["Resource"]  # noqa: E731
    return any(action in s["Action"] and any(fnmatch.fnmatchcase(resource, r) for r in resources(s))
               for s in policy["Statement"])


def actions(policy: dict) -> set:
    return {a for statement in policy["Statement"] for a in statement["Action"]}


def own(called: set, *names: str) -> set:
    """The calls on resources named with one of ``names``, and those on no resource."""
    return {(a, r) for a, r in called if r == "*" or any(n in r for n in names)}


def test_the_policies_are_exactly_what_provisioning_and_the_running_pipeline_call(emulator, seed_dir, tmp_path):
    # One run kept: the second run prunes the first's folder in S3.
    with own_stack(tmp_path, CARCELERY_RECOGNIZER="rekognition", CARCELERY_CAR_THRESHOLD="0",
                   CARCELERY_KEEP_RUNS="1") as stack:
        prefix = stack.env["CARCELERY_QUEUE_PREFIX"]
        bucket, output = f"{prefix}images", f"s3://{prefix}outputs/runs/"
        stack.env.update({"CARCELERY_BUCKET": bucket, "CARCELERY_OUTPUT_URI": output,
                          **{f"CARCELERY_{t.upper()}_TABLE": f"{prefix}{t}" for t in ("results", "ledger", "records")}})
        aws.client("s3").create_bucket(Bucket=f"{prefix}outputs")
        with recording(emulator) as provisioning:
            for _ in range(2):  # creates, then finds and updates
                assert stack.run("carcelery.aws.provision").returncode == 0
            provision.bucket(bucket)  # what dispatch --from does
            images.upload_folder(seed_dir, bucket)
        with recording(emulator) as running:
            stack.start_worker("worker_a", "detect", 1)
            stack.start_worker("worker_b", "text", 1)
            done = dispatch(stack)
            assert done.returncode == 0, done.stderr
            assert dispatch(stack).returncode == 0  # a second run: the ledger's refusals too
            # S3 events, turned on by the bucket's owner (not recorded: the role configures no bucket),
            # then consumed by Instance A's worker: its calls are recorded.
            recorder(emulator, "stop-recording")
            assert stack.run("carcelery.aws.provision", "--events").returncode == 0
            stack.stop("worker_a")
            stack.start_worker("worker_a", "detect", 1)
            # The upload is the user's, not the role's: not recorded.
            aws.client("s3").put_object(Bucket=bucket, Key="new.jpg", Body=(seed_dir / "1.jpg").read_bytes())
            recorder(emulator, "start-recording")
            deadline = time.monotonic() + 120
            while not any(r["image"] == "new.jpg" for r in results.read_records(stack.output_dir)):
                assert time.monotonic() < deadline, "new.jpg's record did not come by its S3 event"
                time.sleep(0.5)
            # Broadcasts (remote control here, events while someone watches) are SNS publishes.
            ping = stack.run("celery", "-A", "carcelery", "inspect", "ping", "--timeout", "10")
            assert ping.returncode == 0 and "worker_b@" in ping.stdout, ping.stdout + ping.stderr
            for command in (("carcelery.commands.dlq",), ("carcelery.commands.dlq", "redrive")):
                assert stack.run(*command).returncode == 0
            stack.stop()  # at exit, each process deletes its transient queues
    provisioning, running = own(provisioning, prefix), own(running, prefix)
    runtime = policy_file(bucket, prefix, REGION, ACCOUNT, output)
    setup = policy_file(bucket, prefix, REGION, ACCOUNT, name="iam-provision-policy.json")

    assert not [call for call in running if not allowed(runtime, *call)], "denied to the running pipeline"
    assert {a for a, _ in running} | ON_OUR_BEHALF == actions(runtime), "the runtime policy allows more"
    assert not [call for call in provisioning if not allowed(setup, *call)], "denied to provisioning"
    assert {a for a, _ in provisioning} == actions(setup), "the provisioning policy allows more"
    # Nothing of provisioning at runtime: no work queue, table or bucket made, changed or deleted.
    writes = [(a, r) for a, r in provisioning - running if not a.split(":")[1].startswith(("Get", "List", "Describe"))]
    assert {a for a, _ in writes} >= {"s3:PutObject", "sqs:CreateQueue", "sqs:SetQueueAttributes",
                                      "dynamodb:CreateTable", "dynamodb:UpdateTimeToLive"}
    assert not [call for call in writes if allowed(runtime, *call)]
    assert not [q for q in ("detect", "text", "dead-letter") if allowed(runtime, "sqs:DeleteQueue", arn("sqs", prefix + q))]
