"""The whole pipeline: the real emulator, both real workers and the real dispatcher."""

import re
import time
import uuid

import pytest

from carcelery import aws
from carcelery.pipeline import results
from carcelery.embedded.demo import Stack

SEED_OUTPUT = [r"1\.jpg: .*BR8167$", r"4\.jpg: YHI9 .TZ$", r"7\.jpg: .*LP 610 LB$"]


def dispatch(stack, *args):
    return stack.run("carcelery.dispatch", *args, "--wait", "--timeout", "300")


def records(stack):
    return {r["image"]: r for r in results.read_records(stack.output_dir)}


def output(stack):
    return (stack.output_dir / results.OUTPUT).read_text()


def test_seed_images_end_to_end(pipeline, bucket, seed_dir):
    done = dispatch(pipeline, "--from", str(seed_dir), "--bucket", bucket)
    assert done.returncode == 0, done.stderr
    assert "uploaded 10 images" in done.stdout and "10 images, 6 cars, 0 failed" in done.stdout
    assert "sent: [##############################] 10/10 (100%)" in done.stderr
    assert done.stderr.rstrip().endswith("done: [##############################] 10/10 (100%)")
    lines = output(pipeline).splitlines()
    assert len(lines) == 3, lines
    for line, pattern in zip(lines, SEED_OUTPUT, strict=True):
        assert re.match(pattern, line), (line, pattern)
    got = records(pipeline)
    assert sorted(got, key=results.natural_key) == [f"{n}.jpg" for n in range(1, 11)]
    assert {name for name, r in got.items() if r["car"]} == {"1.jpg", "2.jpg", "4.jpg", "5.jpg", "6.jpg", "7.jpg"}
    for r in got.values():
        assert r["bucket"] == bucket and r["etag"] and "error" not in r
        assert (r["car_confidence"] >= r["threshold"]) == r["car"]
    plate = got["7.jpg"]["text"][0]
    assert plate["text"].endswith("LP 610 LB") and plate["confidence"] > 50 and plate["box"]["width"] > 0
    assert got["3.jpg"]["text"] == [], "text is read on car images only"
    # Instance A and B each did their part, one log line per task outcome.
    assert "image=4.jpg stage=detect car=yes" in pipeline.log("worker_a")
    assert "image=4.jpg stage=text lines=1" in pipeline.log("worker_b")
    assert "stage=text" not in pipeline.log("worker_a")
    page = (pipeline.output_dir / "report.html").read_text()
    assert page.count("<figure") == 10 and page.count("data:image/jpeg") == 10 and "LP 610 LB" in page


def test_a_second_run_skips_what_was_done_and_force_redoes_it(pipeline, bucket, seed_dir):
    assert dispatch(pipeline, "--from", str(seed_dir), "--bucket", bucket).returncode == 0
    first = output(pipeline)
    again = dispatch(pipeline, "--bucket", bucket)
    assert again.returncode == 0 and "dispatched 0 images" in again.stdout and "skipped 10" in again.stdout
    assert output(pipeline) == first
    forced = dispatch(pipeline, "--bucket", bucket, "--force")
    assert forced.returncode == 0 and "dispatched 10 images" in forced.stdout
    assert output(pipeline) == first
    assert len(records(pipeline)) == 10


def _sending(task, **sends):
    """The dispatcher's ``_task``, with the tasks named in ``sends`` sent by ``sends[name](*args, **options)``."""
    def made(name, *args, **options):
        signature = task(name, *args, **options)
        if name in sends:
            signature.apply_async = lambda **sent: sends[name](*args, **sent)
        return signature
    return made


def test_images_not_sent_are_not_recorded_as_dispatched(emulator, bucket, seed_dir, monkeypatch):
    from kombu.exceptions import ChannelError

    from carcelery.pipeline import sending as dispatcher
    from carcelery.pipeline import ledger, images

    images.upload_folder(seed_dir, bucket, "")

    def refused(*args, **kwargs):
        raise ChannelError("SQS refused the batch")

    monkeypatch.setattr(dispatcher, "_task", _sending(dispatcher._task, detect_car=refused))
    with pytest.raises(ChannelError):
        dispatcher.dispatch(bucket)
    # The next scan sends them.
    assert len(ledger.new(list(images.list_images(bucket, "")))) == 10


def test_the_dispatcher_sends_a_chunk_at_a_time_and_stores_the_size_before_the_last(emulator, bucket, seed_dir,
                                                                                    monkeypatch):
    from carcelery import app
    from carcelery.pipeline import ledger, images
    from carcelery.pipeline import sending as dispatcher

    s3 = aws.client("s3")
    for n in range(1, 8):
        s3.put_object(Bucket=bucket, Key=f"{n}.jpg", Body=b"x")
    # The last chunk holds nothing new: the image held back from the one before is the last part.
    ledger.record([i for i in images.list_images(bucket) if i.key == "7.jpg"], "earlier")
    events = []
    monkeypatch.setattr(dispatcher, "CHUNK", 3)
    monkeypatch.setattr(dispatcher, "_task", _sending(
        dispatcher._task, detect_car=lambda ref, **options: events.append(("send", ref["key"], options["group_index"])),
        watch_run=lambda *args, **options: None))
    monkeypatch.setattr(app.backend, "set_chord_size", lambda group_id, size: events.append(("size", size)))
    run = dispatcher.dispatch(bucket)
    assert (run["images"], run["skipped"]) == (6, 1)
    assert events == [*(("send", f"{n}.jpg", n - 1) for n in range(1, 6)), ("size", 6), ("send", "6.jpg", 5)]
    assert ledger.new(list(images.list_images(bucket))) == [], "all recorded once sent"


def test_bad_objects_are_recorded_and_the_run_goes_on(pipeline, bucket, seed_dir):
    s3 = aws.client("s3")
    for name in ("4.jpg", "7.jpg"):
        s3.put_object(Bucket=bucket, Key=name, Body=(seed_dir / name).read_bytes())
    s3.put_object(Bucket=bucket, Key="empty.jpg", Body=b"")
    s3.put_object(Bucket=bucket, Key="truncated.jpg", Body=(seed_dir / "1.jpg").read_bytes()[:3000])
    s3.put_object(Bucket=bucket, Key="text.jpg", Body=b"not an image at all")
    s3.put_object(Bucket=bucket, Key="notes.txt", Body=b"ignored: not an image key")
    s3.put_object(Bucket=bucket, Key="README", Body=b"ignored: no extension")
    s3.put_object(Bucket=bucket, Key="photos/", Body=b"")
    since = (pipeline.workdir / "worker_b.log").stat().st_size
    done = dispatch(pipeline, "--bucket", bucket)
    assert done.returncode == 1, "a run with failures says so in its exit code"
    # What the listing passed over is counted by reason, where the dispatcher says what it sent and in the summary.
    skipped = "1 skipped: a folder, 2 skipped: not an image"
    assert re.search(rf"^run \w+: dispatched 5 images from s3://{bucket}/; {skipped}$", done.stdout, re.M), done.stdout
    assert f"5 images, 2 cars, 3 failed, {skipped}; output in" in done.stdout
    assert f"terminator -1: 5 images, 2 cars, 3 failed, {skipped}, output in" in pipeline.log("worker_b", since)
    assert "failed: empty.jpg at detect: empty.jpg is empty" in done.stdout
    assert "failed: truncated.jpg at detect: truncated.jpg is a damaged image" in done.stdout
    assert output(pipeline).splitlines()[0].startswith("4.jpg: ")
    got = records(pipeline)
    assert {name for name, r in got.items() if "error" in r} == {"empty.jpg", "truncated.jpg", "text.jpg"}
    assert got["text.jpg"]["error"] == {"stage": "detect", "reason": got["text.jpg"]["error"]["reason"]}
    assert "not an image" in got["text.jpg"]["error"]["reason"]


def test_empty_bucket_ends_at_once_with_an_empty_output(pipeline, bucket):
    done = dispatch(pipeline, "--bucket", bucket)
    assert done.returncode == 0, done.stderr
    assert "dispatched 0 images" in done.stdout and "nothing to recognize" in done.stdout
    assert output(pipeline) == ""


def test_missing_bucket_is_a_clear_error_before_anything_is_sent(pipeline):
    done = dispatch(pipeline, "--bucket", "no-such-bucket-anywhere")
    assert done.returncode == 2
    assert done.stderr.strip() == ("error: ListObjectsV2 on bucket 'no-such-bucket-anywhere' failed (NoSuchBucket): "
                                   "the bucket does not exist; create it "
                                   "(python -m carcelery.aws.provision) or set CARCELERY_BUCKET to an existing one")
    assert "Traceback" not in done.stderr and "run " not in done.stdout


@pytest.mark.integration
def test_no_emulator_is_a_clear_error(tmp_path):
    done = Stack(tmp_path, {"CARCELERY_EMULATOR_PORT": "9"}).run("carcelery.dispatch")
    assert done.returncode == 2
    assert done.stderr == "error: cannot reach http://127.0.0.1:9; start it: python -m carcelery.embedded.emulator\n"


def own_stack(tmp_path, **env):
    """Workers on queues of their own (their own prefix), on the session's emulator."""
    prefix = f"t{uuid.uuid4().hex[:8]}-"
    return Stack(tmp_path, {"CARCELERY_QUEUE_PREFIX": prefix, **env})


def test_rekognition_backend_through_the_pipeline(emulator, bucket, seed_dir, tmp_path):
    # The emulator's Rekognition answers every image with the same canned labels
    # and text; threshold 0 makes every image a car so that both calls are made.
    with own_stack(tmp_path, CARCELERY_RECOGNIZER="rekognition", CARCELERY_CAR_THRESHOLD="0") as stack:
        stack.start_worker("worker_a", "detect", 1)
        stack.start_worker("worker_b", "text", 1)
        aws.client("s3").put_object(Bucket=bucket, Key="1.jpg", Body=(seed_dir / "1.jpg").read_bytes())
        done = dispatch(stack, "--bucket", bucket)
        assert done.returncode == 0, done.stderr
        assert output(stack) == "1.jpg: IT'S MONDAY but keep Smiling\n"


def test_stop_on_terminator_ends_instance_b_after_the_run(emulator, bucket, seed_dir, tmp_path):
    with own_stack(tmp_path, CARCELERY_RECOGNIZER="noop") as stack:
        stack.start_worker("worker_a", "detect", 1)
        b = stack.start_worker("worker_b", "text", 1, "--stop-on-terminator")
        aws.client("s3").put_object(Bucket=bucket, Key="2.jpg", Body=(seed_dir / "2.jpg").read_bytes())
        assert dispatch(stack, "--bucket", bucket).returncode == 0
        assert b.wait(timeout=60) == 0
        assert "--stop-on-terminator, shutting this worker down" in stack.log("worker_b")
        assert stack.procs["worker_a"].poll() is None, "only the worker with the option stops"


def test_beat_dispatches_new_images_only(emulator, bucket, seed_dir, tmp_path):
    with own_stack(tmp_path, CARCELERY_RECOGNIZER="noop", CARCELERY_BUCKET=bucket,
                   CARCELERY_SCAN_INTERVAL="1") as stack:
        stack.start_worker("worker_a", "detect", 1)
        stack.start_worker("worker_b", "text", 1)
        s3 = aws.client("s3")
        for name in ("1.jpg", "2.jpg"):
            s3.put_object(Bucket=bucket, Key=name, Body=(seed_dir / name).read_bytes())
        stack.start("beat", ["-m", "celery", "-A", "carcelery", "beat", "--loglevel", "INFO",
                             "--schedule", str(tmp_path / "beat-schedule")], "beat: Starting")

        def wait_for(names):
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if set(records(stack)) == names:
                    return
                time.sleep(0.5)
            pytest.fail(f"expected results for {names}, have {set(records(stack))}")

        wait_for({"1.jpg", "2.jpg"})
        s3.put_object(Bucket=bucket, Key="3.jpg", Body=(seed_dir / "3.jpg").read_bytes())
        wait_for({"1.jpg", "2.jpg", "3.jpg"})
        detected = re.findall(r"image=(\S+) stage=detect", stack.log("worker_a"))
        assert sorted(detected) == ["1.jpg", "2.jpg", "3.jpg"], "each image is recognized once"


@pytest.mark.integration
def test_demo_runs_the_seed_images(seed_dir, tmp_path, port):
    stack = Stack(tmp_path, {"CARCELERY_EMULATOR_PORT": str(port), "CARCELERY_OUTPUT_DIR": str(tmp_path / "out")})
    done = stack.run("carcelery.embedded.demo", timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    printed = done.stdout.split("output.txt <==\n", 1)[1]
    assert printed == (tmp_path / "out" / "output.txt").read_text()
    assert [line.split(":")[0] for line in printed.splitlines()] == ["1.jpg", "4.jpg", "7.jpg"]


def test_throttled_recognition_loses_and_repeats_no_image(emulator, bucket, seed_dir, tmp_path):
    # The latency recognizer, in its default pool (threads): once calm, once with
    # some calls refused with ThrottlingException, which the tasks retry.
    s3 = aws.client("s3")
    names = [f"{n}.jpg" for n in range(1, 41)]
    for name in names:
        s3.put_object(Bucket=bucket, Key=name, Body=(seed_dir / "1.jpg").read_bytes())
    runs = {}
    for throttle in ("0", "0.15"):
        with own_stack(tmp_path / throttle, CARCELERY_RECOGNIZER="latency", CARCELERY_LATENCY="0.05",
                       CARCELERY_THROTTLE=throttle, CARCELERY_RUN_DEADLINE="30") as stack:
            stack.start_worker("worker_a", "detect", None)
            stack.start_worker("worker_b", "text", None)
            done = dispatch(stack, "--bucket", bucket, "--force")
            assert done.returncode == 0, done.stdout + done.stderr
            assert "concurrency: 32 (thread)" in stack.log("worker_a")
            detected = re.findall(r"image=(\S+) stage=detect car=", stack.log("worker_a"))
            read = re.findall(r"image=(\S+) stage=text lines=", stack.log("worker_b"))
            retried = len(re.findall(r"transient error, retrying", stack.log("worker_a") + stack.log("worker_b")))
            runs[throttle] = output(stack), sorted(detected), sorted(read), retried, set(records(stack))
            prefix = stack.env["CARCELERY_QUEUE_PREFIX"]
            sqs = aws.client("sqs")
            for queue in ("detect", "text"):
                url = sqs.get_queue_url(QueueName=f"{prefix}{queue}")["QueueUrl"]
                deadline = time.monotonic() + 15
                # The threads' acknowledgements delete every message (the run's watch_run, sent
                # again every 3 s with a deadline of 30 s, sees the run complete and ends).
                while True:
                    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
                    if attributes["ApproximateNumberOfMessages"] == attributes["ApproximateNumberOfMessagesNotVisible"] == "0":
                        break
                    assert time.monotonic() < deadline, (queue, attributes)
                    time.sleep(0.5)
    calm, throttled = runs["0"], runs["0.15"]
    assert calm[0] and throttled[0] == calm[0], "the same output.txt"
    assert throttled[1] == calm[1] == sorted(names) and throttled[2] == calm[2], "each image recognized once"
    assert throttled[4] == calm[4] == set(names)
    assert calm[3] == 0 and throttled[3] > 0, "throttled calls were retried"
