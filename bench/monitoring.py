"""What monitoring costs: pipeline throughput with monitoring off, on, and on with Flower watching.

    .venv/bin/python -m bench.monitoring [--images N] [--concurrency C]

Starts its own emulator on a free loopback port. Per configuration: both workers
(noop recognizer, C processes each) on queues of their own, N copies of one seed
image in a bucket of their own, then ``dispatch --wait`` timed to the run's
terminator. Prints tasks per second: 2 per image, plus the terminator.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid
from pathlib import Path

from .pipeline import free_port

CONFIGS = {
    "off": {"CARCELERY_MONITORING": "off"},
    "on, nobody watching": {"CARCELERY_MONITORING": "on"},
    "on, Flower watching": {"CARCELERY_MONITORING": "on"},
}


def subscribed(topic_name: str) -> bool:
    """Whether SNS topic ``topic_name`` exists and has a subscriber."""
    from carcelery import aws

    sns = aws.client("sns")
    arns = [t["TopicArn"] for t in sns.list_topics()["Topics"] if t["TopicArn"].endswith(f":{topic_name}")]
    return any(sns.list_subscriptions_by_topic(TopicArn=arn)["Subscriptions"] for arn in arns)


def run_one(workdir: Path, name: str, env: dict[str, str], images: int, concurrency: int) -> float:
    """Seconds of one run of ``images`` images with configuration ``env``."""
    from carcelery import aws
    from carcelery.aws import provision
    from carcelery.embedded.demo import SEED_IMAGES, Stack

    prefix = f"b{uuid.uuid4().hex[:8]}-"
    env = {**env, "CARCELERY_QUEUE_PREFIX": prefix, "CARCELERY_FLOWER_PORT": str(free_port()),
           "CARCELERY_FLOWER_USER": "bench", "CARCELERY_FLOWER_PASSWORD": uuid.uuid4().hex}
    with Stack(workdir / prefix, env) as stack:
        stack.start_worker("worker_a", "detect", concurrency)
        stack.start_worker("worker_b", "text", concurrency)
        if "Flower" in name:
            stack.start_flower()
            # Flower subscribes its event queue a moment after it serves pages.
            while not subscribed(f"{prefix}celeryev"):
                time.sleep(0.5)
        bucket = f"bench-{prefix.rstrip('-')}"
        provision.bucket(bucket)
        body = (SEED_IMAGES / "2.jpg").read_bytes()
        for n in range(images):
            aws.client("s3").put_object(Bucket=bucket, Key=f"{n}.jpg", Body=body)
        started = time.monotonic()
        done = stack.run("carcelery.dispatch", "--bucket", bucket, "--wait", "--timeout", "900")
        elapsed = time.monotonic() - started
        if done.returncode != 0:
            raise SystemExit(f"{name}: the run failed:\n{done.stdout}{done.stderr}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.monitoring", description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args()
    # Before carcelery is imported: it reads its settings once, at import.
    os.environ.update({"CARCELERY_TARGET": "emulator", "CARCELERY_EMULATOR_HOST": "127.0.0.1",
                       "CARCELERY_EMULATOR_PORT": str(free_port()), "CARCELERY_RECOGNIZER": "noop"})
    from carcelery.embedded.demo import Stack

    workdir = Path(tempfile.mkdtemp(prefix="carcelery-bench-"))
    tasks = 2 * args.images + 1
    print(f"{args.images} images ({tasks} tasks), {args.concurrency} processes per worker, logs in {workdir}")
    with Stack(workdir / "emulator") as emulator:
        emulator.start_emulator()
        for name, env in CONFIGS.items():
            seconds = run_one(workdir, name, env, args.images, args.concurrency)
            print(f"monitoring {name:<22} {seconds:6.1f} s  {tasks / seconds:6.1f} tasks/s", flush=True)


if __name__ == "__main__":
    main()
