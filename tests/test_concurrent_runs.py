"""Two runs at once over two prefixes of one bucket, one under the other: each dispatcher follows its own run."""

import re
import subprocess
import sys
import uuid

from carcelery import aws
from carcelery.embedded.demo import ROOT, Stack


def dispatcher(stack, bucket, prefix):
    return subprocess.Popen([sys.executable, "-m", "carcelery.dispatch", "--bucket", bucket, "--prefix", prefix,
                             "--wait", "--timeout", "300"], cwd=ROOT, env={**stack.env, "PYTHONUNBUFFERED": "1"},
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_two_dispatchers_over_nested_prefixes_each_report_their_own_images(emulator, bucket, seed_dir, tmp_path):
    s3 = aws.client("s3")
    for folder in ("cars/", "cars/new/"):
        for path in sorted(seed_dir.glob("*.jpg")):
            s3.put_object(Bucket=bucket, Key=f"{folder}{path.name}", Body=path.read_bytes())
    env = {"CARCELERY_RECOGNIZER": "noop"}
    # Two deployments' queues (prefixes of their own) on one bucket and one set of tables: the narrower
    # run's workers start only once the wider run has ended, so its images are pending all along.
    with Stack(tmp_path / "new", {"CARCELERY_QUEUE_PREFIX": f"t{uuid.uuid4().hex[:8]}-", **env}) as narrow, \
            Stack(tmp_path / "all", {"CARCELERY_QUEUE_PREFIX": f"t{uuid.uuid4().hex[:8]}-", **env}) as wide:
        first = dispatcher(narrow, bucket, "cars/new/")
        assert re.match(r"run \w+: dispatched 10 images", first.stdout.readline())  # sent, and in the ledger
        wide.start_worker("worker_a", "detect", 1)
        wide.start_worker("worker_b", "text", 1)
        second = dispatcher(wide, bucket, "cars/")
        out, err = second.communicate(timeout=300)
        assert second.returncode == 0, out + err
        assert "dispatched 10 images" in out and "skipped 10 already dispatched" in out, out
        assert "0 failed" in out and "failed:" not in out, out
        assert first.poll() is None, "the narrower run is still going"
        narrow.start_worker("worker_a", "detect", 1)
        narrow.start_worker("worker_b", "text", 1)
        out, err = first.communicate(timeout=300)
        assert first.returncode == 0, out + err
        assert "10 images" in out and "0 failed" in out, out
