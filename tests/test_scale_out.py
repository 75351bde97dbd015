"""Instance B scaled out: three workers on one text queue, one stopped warm (a scale-in) and one killed mid-run."""

import collections
import json
import re
import signal
import subprocess
import sys
import uuid

from test_monitoring import wait_for
from test_pipeline import dispatch

from carcelery import aws
from carcelery.aws import provision
from carcelery.commands.depth import depths
from carcelery.embedded.demo import ROOT, Stack
from carcelery.pipeline import results

IMAGES = 300
# Calls of 0.2 s, so that a worker stopped holds tasks running; 8 threads per worker, 32 messages
# prefetched. A short visibility timeout brings the killed worker's messages back soon; the deadline
# makes watch_run look again (a tenth of it) well within it.
SETTINGS = {"CARCELERY_RECOGNIZER": "latency", "CARCELERY_LATENCY": "0.2", "CARCELERY_LATENCY_JITTER": "0.05",
            "CARCELERY_VISIBILITY_TIMEOUT": "10", "CARCELERY_RUN_DEADLINE": "60", "CARCELERY_MONITORING": "off"}
TEXT_DONE = re.compile(r"image=(\S+) stage=text lines=")


def recognized(stack: Stack, name: str) -> list[str]:
    """The images whose text worker ``name`` read to the end (its log's lines)."""
    return TEXT_DONE.findall(stack.log(name))


def settled(prefix: str) -> bool:
    """Whether the work queues of ``prefix`` hold no message: none waiting, in flight or delayed.

    A message leaves a queue only when it is deleted: what a killed worker held stays in flight
    until SQS delivers it again, and is done then.
    """
    found = [depth for depth in depths(prefix) if depth.queue in (f"{prefix}detect", f"{prefix}text")]
    return len(found) == 2 and all(depth[1:] == (0, 0, 0) for depth in found)


def done_again(done: dict[str, list[str]], killed: str) -> dict[str, list[str]]:
    """The images read more than once (``done``: each worker's images read, a line of its log each),
    by the workers that read them, but for those the ``killed`` worker read: it finished them and was
    killed before it deleted their messages (gathered for a second: carcelery/transport/acks.py)."""
    by: dict[str, list[str]] = collections.defaultdict(list)
    for worker, images in done.items():
        for image in images:
            by[image].append(worker)
    return {image: workers for image, workers in by.items()
            if len(workers) > 1 and not (len(workers) == 2 and killed in workers)}


def test_an_image_read_twice_by_workers_that_lived_is_found():
    done = {"b1": ["1.jpg", "2.jpg", "3.jpg"], "b2": ["2.jpg"], "b3": ["3.jpg", "4.jpg"]}
    assert done_again(done, "b3") == {"2.jpg": ["b1", "b2"]}
    assert done_again({"b1": ["1.jpg", "1.jpg"], "b3": ["1.jpg"]}, "b3") == {"1.jpg": ["b1", "b1", "b3"]}


def uploaded_run(out: str) -> tuple[str, str]:
    """The S3 bucket and prefix where the summary printed by ``dispatch --wait`` says the run's outputs are."""
    bucket, prefix = re.search(r"uploaded to s3://([^/]+)/(\S+/)", out).groups()
    return bucket, prefix


def s3_text(bucket: str, key: str) -> str:
    return aws.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read().decode()


def test_three_b_workers_one_stopped_warm_one_killed_give_a_one_worker_runs_output(emulator, bucket, tmp_path):
    prefix, outputs_bucket = f"t{uuid.uuid4().hex[:8]}-", f"out-{uuid.uuid4().hex[:8]}"
    provision.bucket(outputs_bucket)
    s3 = aws.client("s3")
    for n in range(IMAGES):
        s3.put_object(Bucket=bucket, Key=f"{n:04d}.jpg", Body=b"the latency recognizer reads names only")
    env = {**SETTINGS, "CARCELERY_QUEUE_PREFIX": prefix, "CARCELERY_OUTPUT_URI": f"s3://{outputs_bucket}/carcelery/"}
    # One Stack per host: its own output folder; its worker its own node name (b1@, b2@, b3@).
    a, *bs = [Stack(tmp_path / host, env) for host in ("a", "b1", "b2", "b3")]
    b1, b2, b3 = bs
    try:
        a.start_worker("worker_a", "detect", 32)
        for stack in bs:
            stack.start_worker(stack.workdir.name, "text", 8)
        run = subprocess.Popen([sys.executable, "-m", "carcelery.dispatch", "--bucket", bucket, "--wait",
                                "--timeout", "300"], cwd=ROOT, env=a.env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        # Scale-in in the middle: TERM to the worker's main process only (systemd's KillMode=mixed),
        # Celery's warm shutdown; it ends by itself, having finished what it runs.
        wait_for(lambda: len(recognized(b2, "b2")) >= 10, timeout=120)
        b2.procs["b2"].send_signal(signal.SIGTERM)
        assert b2.procs["b2"].wait(60) == 0, b2.log("b2")[-3000:]
        wait_for(lambda: len(recognized(b3, "b3")) >= 20, timeout=120)
        b3.kill("b3", signal.SIGKILL)
        out, err = run.communicate(timeout=300)
        assert run.returncode == 0, out + err
        assert f"{IMAGES} images" in out and " 0 failed" in out, out
        # Whatever SQS delivers again (a message not deleted) is done before the images are counted.
        wait_for(lambda: settled(prefix), timeout=120)
        done = {stack.workdir.name: recognized(stack, stack.workdir.name) for stack in bs}

        # The same run with one Instance B worker left: the reference.
        alone = dispatch(a, "--bucket", bucket, "--force")
        assert alone.returncode == 0, alone.stdout + alone.stderr
    finally:
        for stack in (*reversed(bs), a):
            stack.stop()

    scaled, reference = uploaded_run(out), uploaded_run(alone.stdout)
    assert scaled != reference
    assert s3_text(*scaled[:1], f"{scaled[1]}{results.OUTPUT}") == s3_text(*reference[:1], f"{reference[1]}{results.OUTPUT}")
    # Every image has its record, none failed.
    records = [json.loads(line) for line in s3_text(scaled[0], f"{scaled[1]}{results.RESULTS}").splitlines()]
    assert {record["image"] for record in records} == {f"{n:04d}.jpg" for n in range(IMAGES)}
    assert not [record for record in records if "error" in record]

    # Every car image read by Instance B, counted in the workers' logs, where a second reading
    # shows. The worker stopped warm: what it finished was done once; what it held and had not
    # started went to the others. The killed worker: what it finished may be done again, once.
    assert done["b2"] and done["b3"]
    assert {image for images in done.values() for image in images} == {r["image"] for r in records if r["car"]}
    assert done_again(done, "b3") == {}, "read more than once, by these workers"
    assert "Warm shutdown" in b2.log("b2") or "warm shutdown" in b2.log("b2").lower()


def test_a_worker_stopped_warm_deletes_what_it_finished_and_gives_back_what_it_had_not_started(emulator, tmp_path):
    """4 threads, 12 tasks of 3 s: stopped while it runs 4 and holds 4 more, it finishes the 4 and
    deletes their messages; the 4 held and the 4 never received are visible at once, nothing is in flight."""
    prefix = f"t{uuid.uuid4().hex[:8]}-"
    env = {**SETTINGS, "CARCELERY_LATENCY": "3", "CARCELERY_LATENCY_JITTER": "0", "CARCELERY_QUEUE_PREFIX": prefix}
    with Stack(tmp_path, env) as stack:
        send = ("from carcelery.tasks import recognize_text\n"
                "for n in range(12):\n"
                "    recognize_text.delay({'image': f'{n}.jpg', 'key': f'{n}.jpg', 'bucket': 'b', 'labels': [],\n"
                "                          'car': True, 'car_confidence': 99.0})\n")
        sent = subprocess.run([sys.executable, "-c", send], cwd=ROOT, env=stack.env, capture_output=True, text=True)
        assert sent.returncode == 0, sent.stderr
        worker = stack.start_worker("b", "text", 4, "--prefetch-multiplier", "2")
        wait_for(lambda: stack.log("b").count("] received") >= 8)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(60) == 0
        assert len(recognized(stack, "b")) == 4, stack.log("b")[-3000:]
    sqs = aws.client("sqs")
    counts = sqs.get_queue_attributes(QueueUrl=sqs.get_queue_url(QueueName=f"{prefix}text")["QueueUrl"],
                                      AttributeNames=["ApproximateNumberOfMessages",
                                                      "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    assert counts == {"ApproximateNumberOfMessages": "8", "ApproximateNumberOfMessagesNotVisible": "0"}
