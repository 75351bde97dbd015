"""Run the whole pipeline on one machine, on the embedded default.

Starts the emulator and Instance A's and Instance B's workers as real
processes, runs the real dispatcher over a folder of images, waits for the
terminator, prints output.txt, and ends the processes it started (by PID).

    python -m carcelery.embedded.demo [FOLDER]          # default: ../shared/images/seed
    python -m carcelery.embedded.demo --watch [FOLDER]  # S3 events: upload one by one, print each line as it lands

With ``--watch`` nothing is dispatched: ``provision --events`` turns the
bucket's event notifications on, the images are uploaded one at a time, and
each line of output.txt is printed as S3's events bring it.

``Stack`` is also what the integration tests and the benchmark start.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from ..app import app
from ..pipeline import results
from ..settings import DETECT_QUEUE, TEXT_QUEUE, settings

ROOT = Path(__file__).resolve().parents[2]
SEED_IMAGES = ROOT.parent / "shared" / "images" / "seed"
# Messages each worker process holds ahead (as Procfile). Detection is quick:
# a deeper prefetch lets one ReceiveMessage fetch more. Text recognition keeps
# celeryconfig.py's 4: enough that no process waits for SQS between tasks.
PREFETCH = {DETECT_QUEUE: 8, TEXT_QUEUE: 4}


class StackError(RuntimeError):
    """A process of the stack did not start; the message holds the end of its log."""


class Stack:
    """The emulator and the workers, each a process started here and ended here by PID.

    Parameters:
      workdir: where logs (``<name>.log``) and, unless ``env`` says otherwise, output go.
      env: settings for every process (CARCELERY_*), on top of this process's environment.
      inherit: False: ``env`` is the processes' whole environment (as a systemd unit's).
    """

    def __init__(self, workdir: Path, env: dict[str, str] | None = None, inherit: bool = True):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        base = os.environ if inherit else {}
        self.env = {**base, "CARCELERY_OUTPUT_DIR": str(self.workdir / "output"), **(env or {})}
        self.procs: dict[str, subprocess.Popen] = {}

    @property
    def output_dir(self) -> Path:
        return Path(self.env["CARCELERY_OUTPUT_DIR"])

    def log(self, name: str, since: int = 0) -> str:
        """What process ``name`` has written, from byte ``since`` on."""
        path = self.workdir / f"{name}.log"
        return path.read_bytes()[since:].decode(errors="replace") if path.exists() else ""

    def start(self, name: str, args: list[str], ready: str, timeout: float = 60,
              executable: str = sys.executable) -> subprocess.Popen:
        """Start ``executable args...`` as process ``name`` and wait until its log shows ``ready``.

        Raises:
          StackError: it exited, or ``ready`` did not appear within ``timeout`` seconds.
        """
        with open(self.workdir / f"{name}.log", "ab") as log:
            start = log.tell()  # a restarted process appends: look for ``ready`` after this
            # Its own session, so that its pool children can be ended with it, by its PID.
            proc = subprocess.Popen([executable, *args], cwd=ROOT, env=self.env, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        self.procs[name] = proc
        deadline = time.monotonic() + timeout
        while ready not in self.log(name, start):
            if proc.poll() is not None or time.monotonic() > deadline:
                self.stop(name)
                raise StackError(f"{name} did not start:\n{self.log(name)[-3000:]}")
            time.sleep(0.1)
        return proc

    def start_emulator(self, folder: Path | None = None) -> subprocess.Popen:
        args = ["-m", "carcelery.embedded.emulator"] + (["--from", str(folder)] if folder else [])
        return self.start("emulator", args, "ready:")

    def start_worker(self, name: str, queue: str, concurrency: int | None = 2, *extra: str) -> subprocess.Popen:
        """Start a worker of ``queue``, as README and the Procfile do: Instance B's (text) is the bare
        ``celery -A carcelery worker``, Instance A's names ``-Q detect``.

        ``concurrency`` None: the configured one (CARCELERY_CONCURRENCY).
        """
        queues = [] if queue == app.conf.task_default_queue else ["-Q", queue]
        args = ["-m", "celery", "-A", "carcelery", "worker", *queues, "-n", f"{name}@%h",
                *(["-c", str(concurrency)] if concurrency else []),
                "--prefetch-multiplier", str(PREFETCH[queue]), "--loglevel", "INFO", *extra]
        return self.start(name, args, " ready.", timeout=120)

    def start_flower(self) -> subprocess.Popen:
        """Flower (``python -m carcelery.commands.flower``), on ``CARCELERY_FLOWER_PORT`` of the stack's settings."""
        return self.start("flower", ["-m", "carcelery.commands.flower"], "Visit me at")

    def start_all(self, folder: Path | None = None, concurrency: int = 2) -> "Stack":
        """The emulator (with ``folder`` uploaded), Instance A's worker and Instance B's worker."""
        self.start_emulator(folder)
        self.start_worker("worker_a", DETECT_QUEUE, concurrency)
        self.start_worker("worker_b", TEXT_QUEUE, concurrency)
        return self

    def run(self, module: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        """Run ``python -m module args...`` to its end, with the stack's settings."""
        return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=self.env,
                              capture_output=True, text=True, timeout=timeout)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to process ``name`` and its children (its process group, whose id is its PID)."""
        proc = self.procs[name]
        if proc.poll() is None:
            os.killpg(proc.pid, sig)

    def stop(self, *names: str, timeout: float = 30) -> None:
        """End the named processes (all, by default), the last started first."""
        for name in reversed(names or list(self.procs)):
            proc = self.procs.pop(name)
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()

    def __enter__(self) -> "Stack":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def watch(stack: Stack, folder: Path, pause: float = 1.0, timeout: float = 300) -> int:
    """Turn S3 events on, start both workers, upload ``folder``'s images one by one, print each line as it lands.

    Raises:
      StackError: a worker did not start.

    Returns:
      The exit code: 0, or 1 (provisioning failed), 3 (an image had no record within ``timeout`` seconds).
    """
    from ..aws import client
    from ..pipeline.images import is_image_key

    done = stack.run("carcelery.aws.provision", "--events")
    if done.returncode:
        print(done.stderr, end="", file=sys.stderr)
        return 1
    print(done.stdout.splitlines()[-1], flush=True)
    # After the events queue is made: Instance A's worker consumes it from its start.
    stack.start_worker("worker_a", DETECT_QUEUE)
    stack.start_worker("worker_b", TEXT_QUEUE)
    names = sorted((p.name for p in folder.iterdir() if is_image_key(p.name)), key=results.natural_key)
    printed: set[str] = set()

    def show() -> None:
        for record in results.read_records(stack.output_dir):
            line = results.output_line(record)
            if record["image"] not in printed and line is not None:
                printed.add(record["image"])
                print(f"  {line}", flush=True)

    s3 = client("s3")
    for name in names:
        print(f"uploading {name}", flush=True)
        s3.upload_file(str(folder / name), settings.bucket, settings.key_prefix + name)
        time.sleep(pause)
        show()
    deadline = time.monotonic() + timeout
    while len({r["image"] for r in results.read_records(stack.output_dir)} & set(names)) < len(names):
        if time.monotonic() > deadline:
            print(f"error: not every image had a record within {timeout:.0f} s; logs in {stack.workdir}", file=sys.stderr)
            return 3
        time.sleep(0.2)
        show()
    show()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m carcelery.embedded.demo", description=__doc__.split("\n")[0])
    parser.add_argument("folder", nargs="?", type=Path, default=SEED_IMAGES, help="images (default: the seed images)")
    parser.add_argument("--watch", action="store_true",
                        help="S3 events: upload the images one by one and print each line as it lands")
    args = parser.parse_args(argv)
    folder = args.folder
    if not folder.is_dir():
        print(f"error: {folder} is not a folder of images; pass one: python -m carcelery.embedded.demo FOLDER",
              file=sys.stderr)
        return 2
    output_dir = settings.output_dir.resolve()
    with Stack(output_dir / "logs", {"CARCELERY_OUTPUT_DIR": str(output_dir)}) as stack:
        print(f"starting the emulator and both workers (logs in {stack.workdir})", flush=True)
        try:
            if args.watch:
                stack.start_emulator()
                return watch(stack, folder)
            stack.start_all()
        except StackError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        done = stack.run("carcelery.dispatch", "--from", str(folder), "--force", "--wait")
        print(done.stdout, end="")
        print(done.stderr, end="", file=sys.stderr)
    output = stack.output_dir / results.OUTPUT
    if not output.exists():
        return done.returncode or 1
    print(f"\n==> {output} <==")
    print(output.read_text(), end="")
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
