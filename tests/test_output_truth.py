"""What a run writes and says is true: keys of any characters, and the run's own figures."""

import re

from carcelery import aws
from carcelery import printable
from carcelery.pipeline import results

# Every character a key may hold that could garble a line (moto refuses a key with a newline:
# its URL routes do not match one; tests/test_results.py writes such a key with the real writer).
HOSTILE = "x\r1.jpg: FAKE123\ty\x1b[31mz\x07\\w.jpg"


def dispatch(stack, *args):
    return stack.run("carcelery.dispatch", *args, "--wait", "--timeout", "300")


def log_size(stack, name):
    """Bytes process ``name`` has logged so far: ``stack.log(name, since=...)`` reads on from there."""
    return (stack.workdir / f"{name}.log").stat().st_size


def test_a_key_of_control_characters_keeps_one_line_per_image(pipeline, bucket, seed_dir):
    s3 = aws.client("s3")
    s3.put_object(Bucket=bucket, Key=HOSTILE, Body=(seed_dir / "4.jpg").read_bytes())
    s3.put_object(Bucket=bucket, Key="7.jpg", Body=(seed_dir / "7.jpg").read_bytes())
    since = log_size(pipeline, "worker_a")
    done = dispatch(pipeline, "--bucket", bucket)
    assert done.returncode == 0, done.stderr
    lines = (pipeline.output_dir / results.OUTPUT).read_bytes().decode().split("\n")
    assert len(lines) == 3 and lines[2] == "", lines
    assert lines[0].startswith("7.jpg: ")
    assert lines[1].startswith(r"x\r1.jpg\x3a FAKE123\ty\x1b[31mz\x07\\w.jpg: YHI9 "), lines[1]
    key, _, _ = lines[1].partition(results.SEPARATOR)
    assert printable.unprintable(key) == HOSTILE
    assert {r["image"] for r in results.read_records(pipeline.output_dir)} == {HOSTILE, "7.jpg"}, "exact in results.jsonl"
    page = (pipeline.output_dir / results.REPORT).read_bytes().decode()
    assert not {"\r", "\x1b", "\x07"} & set(page) and r"<b>x\r1.jpg: FAKE123\ty\x1b[31mz\x07\\w.jpg</b>" in page
    log = pipeline.log("worker_a", since)
    assert r"image=x\r1.jpg: FAKE123\ty\x1b[31mz\x07\\w.jpg stage=detect car=yes" in log
    assert not {"\r", "\x1b", "\x07"} & set(log), "no raw control character in the worker's log"


def test_each_run_counts_its_own_calls(pipeline, bucket, seed_dir):
    s3 = aws.client("s3")

    def run(*names):
        for name in names:
            s3.put_object(Bucket=bucket, Key=name, Body=(seed_dir / name).read_bytes())
        since = log_size(pipeline, "worker_b")
        done = dispatch(pipeline, "--bucket", bucket)
        assert done.returncode == 0, done.stderr
        run_id = re.search(r"^run (\w+): dispatched", done.stdout, re.M).group(1)
        line = re.search(rf"run={run_id} terminator -1: (.*)", pipeline.log("worker_b", since)).group(1)
        return line

    first = run("3.jpg", "4.jpg")
    assert "2 images, 1 cars" in first and "calls {'DetectLabels': 2, 'DetectText': 1}" in first
    second = run("8.jpg")
    assert "3 images, 1 cars" in second, "the files hold the bucket's records, the earlier run's too"
    assert "calls {'DetectLabels': 1, 'DetectText': 0}" in second, "the calls are this run's"
