"""Monitoring over SQS: Flower, remote control and clean-up, with real processes.

Each stack has queues (and SNS topics) of its own prefix on the session's
emulator, and Flower on a free loopback port.
"""

import base64
import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

import pytest

from conftest import free_port

from carcelery import aws
from carcelery.aws import provision
from carcelery.embedded.demo import ROOT, Stack
from carcelery.transport import broadcast

USER, PASSWORD = "watcher", "not-a-secret"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def monitored_stack(workdir) -> Stack:
    return Stack(workdir, {"CARCELERY_QUEUE_PREFIX": f"m{uuid.uuid4().hex[:8]}-", "CARCELERY_RECOGNIZER": "noop",
                           "CARCELERY_FLOWER_PORT": str(free_port()), "CARCELERY_FLOWER_USER": USER,
                           "CARCELERY_FLOWER_PASSWORD": PASSWORD})


def flower_url(stack, path: str) -> str:
    return f"http://127.0.0.1:{stack.env['CARCELERY_FLOWER_PORT']}{path}"


def flower_get(stack, path: str):
    auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    request = urllib.request.Request(flower_url(stack, path), headers={"Authorization": f"Basic {auth}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def inspect_ping(stack) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "celery", "-A", "carcelery", "inspect", "ping", "--timeout", "5"],
                          cwd=ROOT, env=stack.env, capture_output=True, text=True, timeout=60)


def leftovers(prefix: str) -> tuple[list[str], list[str]]:
    """This prefix's queues other than the two task queues, and its SNS topics' subscriptions."""
    urls = aws.client("sqs").list_queues(QueueNamePrefix=prefix).get("QueueUrls", [])
    queues = sorted({url.rsplit("/", 1)[-1] for url in urls} - {f"{prefix}detect", f"{prefix}text"})
    sns = aws.client("sns")
    topics = [t["TopicArn"] for t in sns.list_topics()["Topics"] if t["TopicArn"].rsplit(":", 1)[-1].startswith(prefix)]
    return queues, [s["Endpoint"] for t in topics for s in sns.list_subscriptions_by_topic(TopicArn=t)["Subscriptions"]]


def wait_for(check, ready=bool, timeout: float = 60):
    """``check()``'s first answer that is ``ready``; fails the test with its last answer after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        answer = check()
        if ready(answer) or time.monotonic() > deadline:
            assert ready(answer), f"still {answer!r} after {timeout} s"
            return answer
        time.sleep(1)


def start_flower(stack):
    """Flower, once the workers send it events: its event queue is subscribed and they have seen it."""
    stack.start_flower()
    prefix = stack.env["CARCELERY_QUEUE_PREFIX"]
    wait_for(lambda: [s for s in leftovers(prefix)[1] if "celeryev" in s])
    time.sleep(broadcast.WATCH_SECONDS)


@pytest.fixture(scope="module")
def watched(emulator, seed_dir, tmp_path_factory):
    """Both workers and Flower, after one run over the seed images in a bucket of its own."""
    with monitored_stack(tmp_path_factory.mktemp("watched")) as stack:
        stack.env["CARCELERY_RECOGNIZER"] = "local"  # car images and others, so both workers' tasks show
        stack.start_worker("worker_a", "detect", 1)
        stack.start_worker("worker_b", "text", 1)
        start_flower(stack)
        bucket = f"test-{uuid.uuid4().hex[:12]}"
        provision.bucket(bucket)
        done = stack.run("carcelery.dispatch", "--from", str(seed_dir), "--bucket", bucket, "--wait", "--timeout", "300")
        assert done.returncode == 0, done.stderr
        yield stack, bucket


def run_tasks(stack, bucket):
    """Flower's tasks of the run in ``bucket``, once all 11 (one per image, and the terminator) are done.

    The run's watcher (``watch_run``) is left out: it waits in SQS (delayed) for its first look.
    """
    def mine():
        tasks = flower_get(stack, "/api/tasks")
        return {uid: t for uid, t in tasks.items() if bucket in (t.get("args") or "") + (t.get("result") or "")}

    def done(tasks):
        ours = {uid: t for uid, t in tasks.items() if t["name"] != "carcelery.tasks.watch_run"}
        return len(ours) == 11 and all(t["state"] == "SUCCESS" for t in ours.values())

    tasks = wait_for(mine, done)
    return {uid: t for uid, t in tasks.items() if t["name"] != "carcelery.tasks.watch_run"}


def test_flower_shows_both_workers_and_every_task_of_the_run(watched, seed_dir):
    stack, bucket = watched
    workers = wait_for(lambda: {name for name in flower_get(stack, "/api/workers?refresh=1")
                                if name.startswith(("worker_a@", "worker_b@"))} or None)
    assert {name.split("@")[0] for name in workers} == {"worker_a", "worker_b"}
    tasks = run_tasks(stack, bucket)
    images = sorted(p.name for p in seed_dir.glob("*.jpg"))
    seen = {}
    for task in tasks.values():
        if task["name"] == "carcelery.tasks.terminate":
            assert task["worker"].startswith("worker_b@")
            continue
        image = next(i for i in images if f"'{i}'" in task["args"])
        seen[image] = (task["name"], task["worker"].split("@")[0])
    # A car image's detect_car hands on to recognize_text, under the same task id, on Instance B.
    cars = {"1.jpg", "2.jpg", "4.jpg", "5.jpg", "6.jpg", "7.jpg"}
    assert seen == {i: ("carcelery.tasks.recognize_text", "worker_b") if i in cars
                    else ("carcelery.tasks.detect_car", "worker_a") for i in images}


def test_flower_counts_every_task_a_worker_received(watched, seed_dir):
    """Instance A's received tasks are its succeeded ones and those replaced (handed on to Instance B)."""
    stack, bucket = watched
    run_tasks(stack, bucket)  # every task of the run done
    # The Workers page's own figures (Processed is task-received), as its table reads them.
    workers = flower_get(stack, "/workers?json=1")["data"]
    a = next(info for info in workers if info["hostname"].startswith("worker_a@"))
    images, cars = len(list(seed_dir.glob("*.jpg"))), 6
    assert (a.get("task-received"), a.get("task-succeeded"), a.get("task-failed", 0), a.get("task-replaced")) == \
        (images, images - cars, 0, cars)


def test_flower_wants_the_password(watched):
    stack, _ = watched
    with pytest.raises(urllib.error.HTTPError, match="401"):
        urllib.request.urlopen(flower_url(stack, "/api/workers"), timeout=30)


def test_inspect_ping_gets_replies_from_both_workers(watched):
    stack, _ = watched
    done = inspect_ping(stack)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "worker_a@" in done.stdout and "worker_b@" in done.stdout and "2 nodes online" in done.stdout


def chromium(stack, path: str, tmp_path, *flags: str) -> subprocess.CompletedProcess:
    """Flower's page ``path`` in headless Chromium, logged in, with ``flags`` (--dump-dom, --screenshot=FILE)."""
    url = flower_url(stack, path).replace("//", f"//{USER}:{PASSWORD}@", 1)
    # The page fills its table by JavaScript; the virtual time budget lets it finish.
    page = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                           "--disable-background-networking", "--disable-component-update", "--disable-sync",
                           f"--user-data-dir={tmp_path / 'chromium'}", "--virtual-time-budget=10000",
                           "--window-size=1280,1000", *flags, url], capture_output=True, text=True, timeout=120)
    assert page.returncode == 0, page.stderr[-2000:]
    return page


needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (scripts/setup does not "
                                                             "install it; .ci/run does: apt-get install chromium)")


@needs_chromium
def test_flower_tasks_page_in_headless_chromium(watched, tmp_path):
    stack, bucket = watched
    tasks = run_tasks(stack, bucket)
    page = chromium(stack, "/tasks", tmp_path, "--dump-dom")
    rows = [uid for uid in tasks if f'<tr id="{uid}"' in page.stdout]
    assert len(rows) >= 10, page.stdout[-3000:]
    assert "carcelery.tasks.detect_car" in page.stdout or "carcelery.tasks.recognize_text" in page.stdout
    assert "SUCCESS" in page.stdout


def test_nothing_is_left_after_a_clean_shutdown(emulator, tmp_path):
    stack = monitored_stack(tmp_path)
    prefix = stack.env["CARCELERY_QUEUE_PREFIX"]
    with stack:
        stack.start_worker("worker_a", "detect", 1)
        stack.start_worker("worker_b", "text", 1)
        start_flower(stack)
        assert inspect_ping(stack).returncode == 0
        wait_for(lambda: flower_get(stack, "/api/workers?refresh=1"))
        queues, subscriptions = leftovers(prefix)
        for kind in ("celeryev", "celery-pidbox", "reply-celery-pidbox"):  # Flower's, the workers', Flower's calls'
            assert any(kind in q for q in queues), (kind, queues)
        assert len(subscriptions) >= 3, "Flower's event queue and both workers' mailboxes"
    assert leftovers(prefix) == ([], [])


def test_what_a_crashed_process_left_is_swept_at_the_next_start(emulator, tmp_path):
    stack = monitored_stack(tmp_path)
    prefix = stack.env["CARCELERY_QUEUE_PREFIX"]
    sqs, sns = aws.client("sqs"), aws.client("sns")
    # What a killed Flower leaves: its event queue, subscribed, its lease run out.
    url = sqs.create_queue(QueueName=f"{prefix}celeryev-crashed", tags={"carcelery-lease": str(int(time.time()) - 1)})["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    topic = sns.create_topic(Name=f"{prefix}celeryev")["TopicArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn)
    # A live one's queue: its lease still runs.
    alive = sqs.create_queue(QueueName=f"{prefix}celeryev-alive", tags={"carcelery-lease": str(int(time.time()) + 600)})
    assert leftovers(prefix)[0] == [f"{prefix}celeryev-alive", f"{prefix}celeryev-crashed"]
    inspect_ping(stack)  # no workers: it makes its reply queue, and sweeps first
    assert leftovers(prefix) == ([f"{prefix}celeryev-alive"], [])
    sqs.delete_queue(QueueUrl=alive["QueueUrl"])


def test_monitoring_off_makes_no_topic_and_no_mailbox(emulator, tmp_path):
    stack = monitored_stack(tmp_path)
    stack.env["CARCELERY_MONITORING"] = "off"
    prefix = stack.env["CARCELERY_QUEUE_PREFIX"]
    with stack:
        stack.start_worker("worker_a", "detect", 1)
        assert "No nodes replied" in inspect_ping(stack).stderr
        assert leftovers(prefix) == ([], [])
        assert not [t for t in aws.client("sns").list_topics()["Topics"] if f":{prefix}" in t["TopicArn"]]


@needs_chromium
def test_flowers_broker_page_and_queue_lengths_show_the_queues_during_a_run(emulator, seed_dir, tmp_path):
    """Instance B and Flower up, the run dispatched, Instance A not started yet: its images wait in detect."""
    stack = monitored_stack(tmp_path)
    prefix = stack.env["CARCELERY_QUEUE_PREFIX"]
    images = len(list(seed_dir.glob("*.jpg")))
    with stack:
        assert stack.run("carcelery.aws.provision").returncode == 0  # the dead-letter queue too
        stack.start_worker("worker_b", "text", 1)
        start_flower(stack)
        bucket = f"test-{uuid.uuid4().hex[:12]}"
        provision.bucket(bucket)
        sent = stack.run("carcelery.dispatch", "--from", str(seed_dir), "--bucket", bucket)
        assert sent.returncode == 0, sent.stderr

        def lengths():
            return {q["name"]: q for q in flower_get(stack, "/api/queues/length")["active_queues"]}

        during = wait_for(lengths, lambda found: found.get("detect", {}).get("waiting") == images)
        assert during["detect"]["sqs_queue"] == f"{prefix}detect" and during["detect"]["approximate"] is True
        assert during["detect"]["messages"] == during["detect"]["messages_ready"] == images
        assert {"text", "dead-letter"} <= set(during)
        # The run's watcher waits for its first look in SQS, delayed, not held by Instance B.
        assert (during["text"]["delayed"], during["text"]["in_flight"]) == (1, 0)
        shot = tmp_path / "broker.png"
        chromium(stack, "/broker", tmp_path, f"--screenshot={shot}")
        assert shot.stat().st_size > 10_000
        page = chromium(stack, "/broker", tmp_path, "--dump-dom").stdout
        detect_row = page[page.index('<tr id="detect"'):].split("</tr>", 1)[0]
        assert f"≈ {images}" in detect_row, detect_row
        assert '<tr id="dead-letter"' in page and '<tr id="text"' in page

        stack.start_worker("worker_a", "detect", 1)  # the run goes on, and empties detect
        after = wait_for(lengths, lambda found: found["detect"]["messages"] == 0, timeout=180)
        assert after["dead-letter"]["messages"] == 0
