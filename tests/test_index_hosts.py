"""Instance B on two hosts: runs of S3 events alternate between them, each reads its own records alone."""

import hashlib
import signal
import uuid
from concurrent.futures import ThreadPoolExecutor

from test_events import wait_until

from carcelery import aws
from carcelery.aws import provision
from carcelery.embedded.demo import Stack
from carcelery.pipeline import outputs, results
from carcelery.settings import settings

# Which host's worker runs each upload's run: b1 the first two (the first builds the index), b2 the next
# (a host with no copy), b1 again (a host whose copy is a run behind).
TURNS = [("b1", "1.jpg"), ("b1", "2.jpg"), ("b2", "3.jpg"), ("b1", "4.jpg")]


def turn(hosts: dict[str, Stack], old: str, new: str) -> None:
    """Host ``new``'s worker started, host ``old``'s stopped warm: TERM to its main process alone (Celery's warm
    shutdown: the messages it ran are deleted, not delivered again), while the new one starts."""
    worker = hosts[old].procs.pop(old)
    worker.send_signal(signal.SIGTERM)
    hosts[new].start_worker(new, "text", 1)
    assert worker.wait(60) == 0, hosts[old].log(old)[-3000:]


def test_runs_alternating_between_two_b_hosts_read_their_own_records_once(emulator, bucket, faults, tmp_path):
    out = f"{bucket}-out"
    provision.bucket(out)
    s3 = aws.client("s3")
    env = {"CARCELERY_QUEUE_PREFIX": f"t{uuid.uuid4().hex[:8]}-", "CARCELERY_RECOGNIZER": "noop",
           "CARCELERY_BUCKET": bucket, "CARCELERY_EVENTS_WINDOW": "0.3", "CARCELERY_OUTPUT_URI": f"s3://{out}/c/"}
    # One Stack per host: its own output folder. One B worker at a time, so that the turns are known.
    a, b1, b2 = hosts = [Stack(tmp_path / host, env) for host in ("a", "b1", "b2")]
    # The records table's reads of this bucket: a Query (the whole bucket), a BatchGetItem per key (one key a run).
    faults.set({"call": "dynamodb:Query", "match": [settings.records_table, bucket], "fault": "delay", "seconds": 0},
               *({"call": "dynamodb:BatchGetItem", "match": [settings.records_table, hashlib.sha1(key.encode()).hexdigest()],
                  "fault": "delay", "seconds": 0} for _, key in TURNS))

    def latest():
        try:
            return s3.get_object(Bucket=out, Key="c/latest/output.txt")["Body"].read().decode()
        except s3.exceptions.NoSuchKey:
            return ""

    try:
        assert a.run("carcelery.aws.provision", "--events").returncode == 0
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda stack: stack.start_worker(stack.workdir.name, "text" if stack is b1 else "detect", 1),
                          (a, b1)))
        wait_until(lambda: "events: consuming" in a.log("a"), "worker a consuming the events", 30)
        on = "b1"
        for host, key in TURNS:
            if host != on:  # no upload meanwhile
                turn({"b1": b1, "b2": b2}, on, host)
                on = host
            s3.put_object(Bucket=bucket, Key=key, Body=b"noop never reads it")
            wait_until(lambda key=key: f"{key}: NOOP\n" in latest(), f"{key}'s line in the URI's latest/", 60)
        reads = faults.hits()
    finally:
        for stack in reversed(hosts):
            stack.stop()

    ran = {stack.workdir.name: len(list((stack.output_dir / outputs.RUNS).iterdir())) for stack in (b1, b2)}
    assert ran == {"b1": 3, "b2": 1}, f"runs per host: {ran}"
    assert reads[0] == 1, f"the whole bucket read {reads[0]} times: by runs other than the first"
    # The first run's record came with the whole bucket; every later run read its own record once.
    assert reads[1:] == [0] + [1] * (len(TURNS) - 1), f"reads of each key's record, in turn: {reads[1:]}"
    whole = "".join(f"{key}: NOOP\n" for _, key in TURNS)
    # One worker's run of the whole bucket (the terminator's function, here): the same output.txt.
    alone = outputs.write({"id": uuid.uuid4().hex[:12], "bucket": bucket}, tmp_path / "alone")
    assert (tmp_path / "alone" / outputs.RUNS / alone["run"] / results.OUTPUT).read_text() == latest() == whole
