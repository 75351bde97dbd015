"""How a run scales with its size: images per second and every process's peak memory, per run size.

    python -m bench.scale --sizes 2000,5000,20000[,100000] [--json FILE]

Per size, on a fresh emulator of its own (a free loopback port), with the
``noop`` recognizer (no model: what is measured is the pipeline and the
emulator): N objects uploaded (noop never reads them), both workers (2
processes each), then ``dispatch --wait``, timed from the dispatcher's start
to the terminator's output.txt. Printed and in the JSON: images per second,
the dispatcher's time to all sent, the rate in each tenth of the run (from
Instance B's log: flat means no cost grows with the run), peak RSS (VmHWM) of
every process (emulator, dispatcher, each worker's main process and children),
and the CPU each used.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import re
import sys
import tempfile
import threading
import time
from pathlib import Path

from .pipeline import free_port
from .processes import peak_rss_mb, use_rows
from .timed import MEASURED, timed_dispatch

BUCKET = "scale-images"


def tenths(log: str, started: float, images: int) -> list[float]:
    """Images per second in each tenth of the run, from the end times of Instance B's text tasks."""
    stamps = sorted(datetime.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()
                    for stamp in re.findall(r"^\[(\S+ \S+): INFO/ForkPoolWorker-\d+\] \S+: image=\S+ stage=text", log, re.M))
    rates: list[float] = []
    previous = started
    for tenth in range(1, 11):
        index = min(len(stamps), tenth * images // 10) - 1
        if index < 0:
            return rates
        rates.append((images // 10) / max(1e-6, stamps[index] - previous))
        previous = stamps[index]
    return rates


@contextlib.contextmanager
def sampled_peaks(pids: dict[str, int], peaks: dict):
    """Keep the highest VmHWM seen of each process tree in ``peaks`` while in the block.

    Sampled, not read once at the end: the dispatcher, and pool children, have ended by then.
    """
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            for name, pid in pids.items():
                for child, mb in peak_rss_mb(pid).items():
                    peaks.setdefault(name, {})[child] = max(mb, peaks.get(name, {}).get(child, 0.0))
            stop.wait(0.5)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        yield
    finally:
        stop.set()
        sampler.join()


def run_size(images: int, workdir: Path) -> dict:
    from carcelery import aws
    from carcelery.pipeline import results
    from carcelery.embedded.demo import Stack

    aws.reset()  # a fresh emulator per size, on the same port
    with Stack(workdir, {"CARCELERY_OUTPUT_DIR": str(workdir / "output")}) as stack:
        stack.start_emulator()
        started = time.perf_counter()
        s3 = aws.client("s3")
        for n in range(1, images + 1):
            s3.put_object(Bucket=BUCKET, Key=f"{n}.jpg", Body=b"noop never reads it")
        upload_s = time.perf_counter() - started
        stack.start_worker("worker_a", "detect", 2)
        stack.start_worker("worker_b", "text", 2)
        peaks: dict[str, dict] = {}
        run = timed_dispatch(stack, "--timeout", "36000", watch=lambda pid: sampled_peaks(
            {"dispatcher": pid, **{name: stack.procs[name].pid for name in MEASURED}}, peaks))
        lines = sum(1 for _ in (stack.output_dir / results.OUTPUT).open())
        rates = tenths(stack.log("worker_b"), run["started"], images)
        terminator = re.findall(r"terminate\[\S+\] succeeded in ([\d.]+)s", stack.log("worker_b"))
    return {
        "images": images, "exit_code": run["exit_code"], "output_lines": lines, "upload_s": upload_s,
        "wall_s": run["wall_s"], "images_per_s": images / run["wall_s"], "dispatch_send_s": run["dispatch_send_s"],
        "images_per_s_by_tenth": rates, "terminator_s": float(terminator[-1]) if terminator else None,
        "peak_rss_mb": peaks, "cpu_s": run["cpu_s"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="2000,5000,20000", help="run sizes, comma-separated")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    # Before carcelery is imported: it reads its settings once. Each size's emulator, on this port.
    os.environ.update({"CARCELERY_TARGET": "emulator", "CARCELERY_QUEUE_PREFIX": "scale-",
                       "CARCELERY_EMULATOR_PORT": str(free_port()), "CARCELERY_BUCKET": BUCKET,
                       "CARCELERY_RECOGNIZER": "noop"})
    figures = []
    for images in (int(size) for size in args.sizes.split(",")):
        got = run_size(images, Path(tempfile.mkdtemp(prefix=f"carcelery-scale-{images}-")))
        figures.append(got)
        print(f"{images} images (noop, A=2 B=2): exit {got['exit_code']}, output.txt {got['output_lines']} lines")
        rows = [("wall, dispatcher start to output.txt", f"{got['wall_s']:.1f} s"),
                ("images per second", f"{got['images_per_s']:.1f}"),
                ("  in each tenth of the run", " ".join(f"{r:.0f}" for r in got["images_per_s_by_tenth"])),
                ("dispatcher start to all sent", f"{got['dispatch_send_s']:.1f} s"),
                ("terminator (outputs written)", f"{got['terminator_s'] or 0:.1f} s"),
                ("upload before the run", f"{got['upload_s']:.1f} s")]
        rows += use_rows(got["cpu_s"], got["peak_rss_mb"])
        for label, value in rows:
            print(f"  {label:<38} {value}", flush=True)
        if args.json:
            args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return max(f["exit_code"] for f in figures)


if __name__ == "__main__":
    sys.exit(main())
