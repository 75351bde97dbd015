"""Faults: workers killed mid-run, odd keys, poison messages, bad credentials, secrets in logs."""

import json
import re
import signal
import subprocess
import sys
import time
import uuid

import pytest

from carcelery import aws
from carcelery.pipeline import index, outputs, report, results
from carcelery.embedded.demo import ROOT, Stack
from test_pipeline import dispatch, output, own_stack, records


def upload(bucket, seed_dir, copies=1):
    s3 = aws.client("s3")
    for n in range(copies):
        for path in sorted(seed_dir.iterdir()):
            if path.suffix == ".jpg":
                s3.put_object(Bucket=bucket, Key=f"{n}/{path.name}" if copies > 1 else path.name,
                              Body=path.read_bytes())


def wait_for_log(stack, name, pattern, timeout=120):
    deadline = time.monotonic() + timeout
    while not re.search(pattern, stack.log(name)):
        assert time.monotonic() < deadline, f"{pattern!r} never appeared in {name}'s log"
        time.sleep(0.05)


@pytest.mark.parametrize("victim, stage", [("worker_b", "text"), ("worker_a", "detect")])
def test_sigkill_mid_run_then_restart_gives_the_same_output(emulator, seed_dir, tmp_path, victim, stage):
    quiet, noisy = f"q-{uuid.uuid4().hex[:8]}", f"n-{uuid.uuid4().hex[:8]}"
    from carcelery.aws import provision

    # A short visibility timeout, so that what the killed worker held comes back soon.
    with own_stack(tmp_path, CARCELERY_VISIBILITY_TIMEOUT="5") as stack:
        stack.start_worker("worker_a", "detect", 1)
        stack.start_worker("worker_b", "text", 1)
        for bucket in (quiet, noisy):
            provision.bucket(bucket)
            upload(bucket, seed_dir, copies=2)
        undisturbed = dispatch(stack, "--bucket", quiet)
        assert undisturbed.returncode == 0, undisturbed.stderr
        expected = output(stack)
        assert len(expected.splitlines()) == 6

        run = subprocess.Popen([sys.executable, "-m", "carcelery.dispatch", "--bucket", noisy, "--wait",
                                "--timeout", "300"], cwd=ROOT, env=stack.env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        before = len(stack.log(victim).encode())
        wait_for_log(stack, victim, rf"(?s)run {noisy}|.{{{before}}}.*image=\S+ stage={stage}")
        stack.kill(victim, signal.SIGKILL)
        stack.procs[victim].wait()
        restarted_at = (stack.workdir / f"{victim}.log").stat().st_size
        stack.start_worker(victim, "detect" if victim == "worker_a" else "text", 1)
        out, err = run.communicate(timeout=300)
        assert run.returncode == 0, out + err
        assert output(stack) == expected
        got = records(stack)
        assert len(got) == 20 and not [r for r in got.values() if "error" in r]
        assert f"stage={stage}" in stack.log(victim, restarted_at), "the kill came after the work was done"


def test_odd_keys_stay_inside_the_output_folder(pipeline, bucket, seed_dir):
    s3 = aws.client("s3")
    keys = {"my car.jpg": "4.jpg", "voiture-é/ünïcode 7.jpg": "7.jpg", "../../escape.jpg": "1.jpg",
            "a/../../b.jpg": "2.jpg"}
    for key, source in keys.items():
        s3.put_object(Bucket=bucket, Key=key, Body=(seed_dir / source).read_bytes())
    pipeline.output_dir.mkdir(parents=True, exist_ok=True)
    before = sorted(p.name for p in pipeline.output_dir.parent.iterdir())
    done = dispatch(pipeline, "--bucket", bucket)
    assert done.returncode == 0, done.stderr
    assert set(records(pipeline)) == set(keys)
    lines = output(pipeline).splitlines()
    assert any(re.match(r"my car\.jpg: YHI9 .TZ$", line) for line in lines), lines
    assert any(re.match(r"voiture-é/ünïcode 7\.jpg: .*LP 610 LB$", line) for line in lines), lines
    assert sorted(p.name for p in pipeline.output_dir.parent.iterdir()) == before
    assert sorted(p.name for p in pipeline.output_dir.iterdir()) == sorted(
        [results.OUTPUT, results.RESULTS, report.REPORT, outputs.LATEST, outputs.RUNS, index.INDEX])
    (run,) = [p for p in (pipeline.output_dir / outputs.RUNS).iterdir() if p.name in done.stdout]
    assert sorted(p.name for p in run.iterdir()) == sorted([results.OUTPUT, results.RESULTS, report.REPORT])


def test_a_message_received_too_often_goes_to_the_dead_letter_queue(emulator, tmp_path):
    prefix = f"d{uuid.uuid4().hex[:8]}-"
    stack = Stack(tmp_path, {"CARCELERY_QUEUE_PREFIX": prefix, "CARCELERY_MAX_RECEIVES": "2"})
    assert stack.run("carcelery.aws.provision").returncode == 0
    sqs = aws.client("sqs")
    work = sqs.get_queue_url(QueueName=f"{prefix}detect")["QueueUrl"]
    dead = sqs.get_queue_url(QueueName=f"{prefix}dead-letter")["QueueUrl"]
    sqs.send_message(QueueUrl=work, MessageBody="poison")
    for _ in range(2):  # a worker that dies on it, twice
        assert sqs.receive_message(QueueUrl=work, VisibilityTimeout=0)["Messages"]
    assert "Messages" not in sqs.receive_message(QueueUrl=work, VisibilityTimeout=0)
    assert sqs.receive_message(QueueUrl=dead)["Messages"][0]["Body"] == "poison"


@pytest.fixture
def authenticating_aws(tmp_path, port):
    """A moto server that checks credentials (it knows none): what AWS says to wrong ones."""
    stack = Stack(tmp_path, {"INITIAL_NO_AUTH_ACTION_COUNT": "0"})
    with stack:
        stack.start("aws", ["-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], "Running on")
        yield f"http://127.0.0.1:{port}"


def aws_env(endpoint, **extra):
    # On AWS the outputs' index needs CARCELERY_OUTPUT_URI (a bucket the tests that run the pipeline make).
    return {"CARCELERY_TARGET": "aws", "AWS_ENDPOINT_URL": endpoint, "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
            "AWS_CONFIG_FILE": "/nonexistent", "CARCELERY_OUTPUT_URI": "s3://carcelery-test-outputs/", **extra}


@pytest.mark.integration
def test_wrong_credentials_are_named_before_anything_is_sent(authenticating_aws, tmp_path):
    stack = Stack(tmp_path, aws_env(authenticating_aws, AWS_ACCESS_KEY_ID="AKIAWRONGWRONGWRONG1",
                                    AWS_SECRET_ACCESS_KEY="wrong-secret"))
    done = stack.run("carcelery.dispatch", "--bucket", "any-bucket")
    assert done.returncode == 2
    assert done.stderr == ("error: ListObjectsV2 on bucket 'any-bucket' failed (InvalidAccessKeyId): "
                           "the AWS access key is not valid; check your AWS credentials (aws configure)\n")


@pytest.mark.integration
def test_missing_credentials_are_named(authenticating_aws, tmp_path):
    stack = Stack(tmp_path, aws_env(authenticating_aws))
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        stack.env.pop(name, None)
    done = stack.run("carcelery.dispatch", "--bucket", "any-bucket")
    assert done.returncode == 2 and done.stderr.startswith("error: no AWS credentials found")


@pytest.mark.integration
def test_on_aws_without_the_output_uri_the_dispatcher_names_it_and_sends_nothing(emulator, bucket, seed_dir, tmp_path):
    endpoint = f"http://127.0.0.1:{emulator.env['CARCELERY_EMULATOR_PORT']}"
    aws.client("s3").put_object(Bucket=bucket, Key="2.jpg", Body=(seed_dir / "2.jpg").read_bytes())
    stack = Stack(tmp_path, aws_env(endpoint, AWS_ACCESS_KEY_ID="AKIAEXAMPLEEXAMPLE12", AWS_SECRET_ACCESS_KEY="x",
                                    CARCELERY_OUTPUT_URI=""))
    done = stack.run("carcelery.dispatch", "--bucket", bucket)
    assert (done.returncode, done.stderr) == (2, "error: the outputs' index is kept under CARCELERY_OUTPUT_URI, which "
                                                 "is not set: set it to s3://bucket/prefix/ (the stack's OutputLocation)\n")
    from carcelery.pipeline import records as stored

    assert list(stored.read(bucket)) == [], "nothing sent"


def test_the_secret_never_reaches_a_log(emulator, bucket, seed_dir, tmp_path):
    # The AWS code path (standard credential chain) against the emulator, with a secret to look for.
    secret = f"s3cr3t-{uuid.uuid4().hex}"
    endpoint = f"http://127.0.0.1:{emulator.env['CARCELERY_EMULATOR_PORT']}"
    env = aws_env(endpoint, AWS_ACCESS_KEY_ID="AKIAEXAMPLEEXAMPLE12", AWS_SECRET_ACCESS_KEY=secret,
                  CARCELERY_RECOGNIZER="noop", CARCELERY_OUTPUT_URI=f"s3://{bucket}/outputs/")
    with own_stack(tmp_path, **env) as stack:
        assert stack.run("carcelery.aws.provision").returncode == 0
        stack.start_worker("worker_a", "detect", 1, "--loglevel", "DEBUG")
        stack.start_worker("worker_b", "text", 1, "--loglevel", "DEBUG")
        aws.client("s3").put_object(Bucket=bucket, Key="2.jpg", Body=(seed_dir / "2.jpg").read_bytes())
        done = dispatch(stack, "--bucket", bucket)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout.splitlines()[-1])["images"] == 1
        logs = stack.log("worker_a") + stack.log("worker_b") + done.stdout + done.stderr
        assert secret not in logs
