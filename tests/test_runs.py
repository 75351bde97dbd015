"""Runs of any size that always end, with outputs that tell the truth: real emulator, workers, dispatcher."""

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid

import pytest
from botocore.exceptions import ClientError

from carcelery import app, aws
from carcelery.backend import callback_not_sent
from carcelery.pipeline import outputs, results, runs
from carcelery.aws import provision
from carcelery.embedded.demo import ROOT, Stack
from test_pipeline import dispatch, output, own_stack, records


def test_a_run_of_more_than_2000_images_ends_with_a_complete_output(emulator, bucket, tmp_path):
    # Over what one SQS message (the terminator's, ~1,800 records) or one
    # DynamoDB item (the group of task ids, ~8,000) could carry.
    count = 2050
    s3 = aws.client("s3")
    for n in range(1, count + 1):
        s3.put_object(Bucket=bucket, Key=f"{n}.jpg", Body=b"noop never reads it")
    with own_stack(tmp_path, CARCELERY_RECOGNIZER="noop", CARCELERY_MONITORING="off") as stack:
        stack.start_worker("worker_a", "detect", 2)
        stack.start_worker("worker_b", "text", 2)
        done = dispatch(stack, "--bucket", bucket)
        assert done.returncode == 0, done.stderr[-3000:]
        assert json.loads(done.stdout.splitlines()[-1])["images"] == count
        assert output(stack) == "".join(f"{n}.jpg: NOOP\n" for n in range(1, count + 1))
        assert len(records(stack)) == count


def test_a_poison_goes_to_the_dead_letter_queue_the_run_ends_and_the_tool_sends_it_back(emulator, bucket, tmp_path):
    s3 = aws.client("s3")
    for name in ("1.jpg", "2.jpg", "poison.jpg"):
        s3.put_object(Bucket=bucket, Key=name, Body=b"noop never reads it")
    poison = {"CARCELERY_RECOGNIZER": "noop", "CARCELERY_NOOP_EXIT_ON": "poison.jpg", "CARCELERY_MAX_RECEIVES": "2",
              "CARCELERY_VISIBILITY_TIMEOUT": "5", "CARCELERY_RUN_DEADLINE": "30"}
    with own_stack(tmp_path, **poison) as stack:
        assert stack.run("carcelery.aws.provision").returncode == 0  # the queues, with their redrive policy
        stack.start_worker("worker_a", "detect", 1)
        stack.start_worker("worker_b", "text", 1)
        done = dispatch(stack, "--bucket", bucket)
        # The worker process died on it at every receive; SQS moved it on; the run ended at its deadline.
        assert done.returncode == 1, done.stdout + done.stderr
        assert "3 images, 2 cars, 1 failed" in done.stdout
        assert "failed: poison.jpg at result: in the dead-letter queue after 2 receives" in done.stdout
        assert output(stack) == "1.jpg: NOOP\n2.jpg: NOOP\n"
        assert stack.log("worker_a").count("exited with 'exitcode 70'") == 2, "once per receive, no copies"
        assert "ending it with 1 images missing" in stack.log("worker_b")

        listed = stack.run("carcelery.commands.dlq")
        assert listed.returncode == 0, listed.stderr
        (line,) = [line for line in listed.stdout.splitlines() if line.startswith("poison.jpg")]
        assert f"bucket={bucket}" in line and "task=carcelery.tasks.detect_car" in line
        assert line.endswith(f"queue={stack.env['CARCELERY_QUEUE_PREFIX']}detect")

        # The cause fixed (no poison switch), the tool sends it back; its late result
        # completes the chord after all, and the terminator writes the files again.
        stack.stop("worker_a")
        del stack.env["CARCELERY_NOOP_EXIT_ON"]
        sent = stack.run("carcelery.commands.dlq", "redrive")
        assert sent.returncode == 0 and "1 messages sent back to their queues" in sent.stdout, sent.stderr
        assert "0 messages" in stack.run("carcelery.commands.dlq").stdout
        before = stack.log("worker_b").count("terminator -1")
        stack.start_worker("worker_a", "detect", 1)
        deadline = time.monotonic() + 60
        while stack.log("worker_b").count("terminator -1") == before and time.monotonic() < deadline:
            time.sleep(0.5)
        assert output(stack) == "1.jpg: NOOP\n2.jpg: NOOP\npoison.jpg: NOOP\n"
        assert "error" not in records(stack)["poison.jpg"]


def test_outputs_are_also_written_to_an_s3_uri(emulator, bucket, tmp_path):
    aws.client("s3").put_object(Bucket=bucket, Key="1.jpg", Body=b"noop never reads it")
    provision.bucket(f"{bucket}-out")
    with own_stack(tmp_path, CARCELERY_RECOGNIZER="noop", CARCELERY_OUTPUT_URI=f"s3://{bucket}-out/carcelery/") as stack:
        stack.start_worker("worker_a", "detect", 1)
        stack.start_worker("worker_b", "text", 1)
        done = dispatch(stack, "--bucket", bucket)
        assert done.returncode == 0, done.stderr
        run = json.loads(done.stdout.splitlines()[-1])["run"]
        assert f"uploaded to s3://{bucket}-out/carcelery/runs/{run}/" in done.stdout
        s3 = aws.client("s3")
        for where in (f"runs/{run}", "latest"):
            for name in outputs.FILES:
                got = s3.get_object(Bucket=f"{bucket}-out", Key=f"carcelery/{where}/{name}")["Body"].read()
                assert got == (stack.output_dir / name).read_bytes()
        assert (stack.output_dir / results.OUTPUT).read_text() == "1.jpg: NOOP\n"


@pytest.mark.integration
def test_the_demo_prints_exactly_the_images_of_its_bucket_after_earlier_runs(seed_dir, tmp_path, port):
    # Another folder into the same bucket name, on another emulator's life, then the demo:
    # its output is made from the store, never merged with what the output folder held.
    other = tmp_path / "other"
    other.mkdir()
    (other / "extra.jpg").write_bytes((seed_dir / "4.jpg").read_bytes())
    env = {"CARCELERY_EMULATOR_PORT": str(port), "CARCELERY_OUTPUT_DIR": str(tmp_path / "out"),
           "CARCELERY_RECOGNIZER": "noop"}
    first = Stack(tmp_path / "first", env).run("carcelery.embedded.demo", str(other), timeout=600)
    assert first.returncode == 0 and first.stdout.endswith("extra.jpg: NOOP\n"), first.stdout + first.stderr
    done = Stack(tmp_path / "second", env).run("carcelery.embedded.demo", str(seed_dir), timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    printed = done.stdout.split("output.txt <==\n", 1)[1]
    assert printed == "".join(f"{n}.jpg: NOOP\n" for n in range(1, 11))
    runs = sorted((tmp_path / "out" / outputs.RUNS).iterdir(), key=os.path.getmtime)
    assert len(runs) == 2 and (tmp_path / "out" / outputs.LATEST).resolve() == runs[1].resolve()
    assert (runs[0] / results.OUTPUT).read_text() == "extra.jpg: NOOP\n", "each run keeps its own files"


def test_a_terminator_not_sent_for_good_fails_its_run_at_once_and_for_a_moment_is_left_to_watch_run():
    # What the result backend tells (callback_not_sent), the run decides: the backend knows no run.
    stored: list[tuple[str, Exception]] = []

    class Backend:  # what the receiver uses of the sender
        def mark_as_failure(self, task_id: str, exc: Exception) -> None:
            stored.append((task_id, exc))

    backend = Backend()
    terminator = app.signature(runs.TERMINATOR, args=({"id": "r1", "bucket": "b"},)).set(task_id="t1")
    denied = ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "SendMessage")
    callback_not_sent.send(sender=backend, group_id="g", callback=terminator, exc=ConnectionError("a moment"))
    assert stored == [], "watch_run sends it at its next look"
    callback_not_sent.send(sender=backend, group_id="g", callback=app.signature("another.task").set(task_id="x"),
                           exc=denied)
    assert stored == [], "another chord's callback is not a run's"
    callback_not_sent.send(sender=backend, group_id="g", callback=terminator, exc=denied)
    [(task_id, failure)] = stored
    assert task_id == "t1" and isinstance(failure, runs.RunFailed)
    assert str(failure).startswith("run r1: the terminator (-1) was not sent: SendMessage on queue "), failure


def test_a_terminator_not_sent_is_sent_again_or_fails_the_run_in_one_line(emulator, faults, tmp_path):
    # The last part's send of the terminator fails: for a moment (every attempt of
    # one call: botocore's 5), then for good (access denied to Instance B's queue).
    s3 = aws.client("s3")
    moment, denied = f"moment-{uuid.uuid4().hex[:8]}", f"denied-{uuid.uuid4().hex[:8]}"
    for bucket in (moment, denied):
        provision.bucket(bucket)
        for name in ("1.jpg", "2.jpg"):
            s3.put_object(Bucket=bucket, Key=name, Body=b"noop never reads it")
    with own_stack(tmp_path, CARCELERY_RECOGNIZER="noop", CARCELERY_RUN_DEADLINE="10") as stack:
        stack.start_worker("worker_a", "detect", 1)
        stack.start_worker("worker_b", "text", 1)
        text_queue = f"{stack.env['CARCELERY_QUEUE_PREFIX']}text"
        faults.set({"call": "sqs:SendMessage", "match": ["carcelery.tasks.terminate", moment], "fault": "transient",
                    "times": 5})
        done = dispatch(stack, "--bucket", moment)
        assert done.returncode == 0, done.stdout + done.stderr
        assert faults.hits() == [5]
        assert output(stack) == "1.jpg: NOOP\n2.jpg: NOOP\n"
        assert "the terminator was not sent" in stack.log("worker_b")
        assert "complete, but its terminator was not sent: sending it" in stack.log("worker_b")

        faults.set({"call": "sqs:SendMessage", "match": ["carcelery.tasks.terminate", denied], "fault": "denied"})
        done = dispatch(stack, "--bucket", denied)
        assert done.returncode == 4, done.stdout + done.stderr
        (line,) = done.stderr.strip().splitlines()[-1:]
        assert "Traceback" not in done.stderr
        run = re.search(r"run (\w+): dispatched", done.stdout).group(1)
        assert line == (f"error: run {run}: the terminator (-1) was not sent: SendMessage on queue {text_queue} "
                        f"failed (AccessDenied): the credentials lack sqs:SendMessage; grant it "
                        f"(deploy/iam-policy.json, docs/aws.md)")
        assert faults.hits() == [1], "a denial is not retried"
        assert output(stack) == "1.jpg: NOOP\n2.jpg: NOOP\n", "this run wrote no files: the last run's stand"
        assert not (stack.output_dir / outputs.RUNS / run).exists()


def test_a_run_whose_dispatcher_dies_while_sending_still_ends(emulator, bucket, faults, tmp_path):
    s3 = aws.client("s3")
    names = [f"{n}.jpg" for n in range(1, 26)]
    for name in names:
        s3.put_object(Bucket=bucket, Key=name, Body=b"noop never reads it")
    with own_stack(tmp_path, CARCELERY_RECOGNIZER="noop", CARCELERY_RUN_DEADLINE="10") as stack:
        stack.start_worker("worker_a", "detect", 1)
        stack.start_worker("worker_b", "text", 1)
        # The first ten images go (one SendMessageBatch); the second batch hangs, and the dispatcher is killed in it.
        faults.set({"call": "sqs:SendMessageBatch", "match": [bucket, "carcelery.tasks.detect_car"], "fault": "delay",
                    "seconds": 120, "then": "transient", "skip": 1})
        sending = subprocess.Popen([sys.executable, "-m", "carcelery.dispatch", "--bucket", bucket], cwd=ROOT,
                                   env=stack.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while faults.hits() != [1]:
            assert sending.poll() is None and time.monotonic() < deadline, "the dispatcher never reached its second batch"
            time.sleep(0.1)
        os.kill(sending.pid, signal.SIGKILL)
        sending.wait()
        # The ten sent are done, the deadline passes, the run ends with what it has.
        deadline = time.monotonic() + 90
        while "terminator -1" not in stack.log("worker_b"):
            assert time.monotonic() < deadline, stack.log("worker_b")[-3000:]
            time.sleep(0.5)
        got = records(stack)
        assert len(got) == 25
        done = sorted((name for name, record in got.items() if "error" not in record), key=results.natural_key)
        assert len(done) == 10
        assert output(stack) == "".join(f"{name}: NOOP\n" for name in done)
        for name in set(names) - set(done):
            assert got[name]["error"]["stage"] == "result"
            assert got[name]["error"]["reason"].endswith("the dispatcher stopped before it had sent every image: "
                                                         "this one may never have been sent"), got[name]
        assert "ending it with 15 images missing" in stack.log("worker_b")
