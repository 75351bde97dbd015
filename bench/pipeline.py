"""The whole pipeline's speed, against the ideal and against the assignment's design.

    python -m bench.pipeline --images N [--backend local|noop|latency] [--json FILE]
    python -m bench.pipeline --backend latency --latency SECONDS [--throttle FRACTION] ...

In one run, on a fresh emulator of its own (a free loopback port):
1. makes N distinct images from the seed images and uploads them;
2. model time: every image through the detector, the car images through OCR, one
   thread per model, before and after 3. and 4. (their mean), in as many processes
   side by side as there are cores, and in one process alone;
   ideal wall time = model time / cores, the first as the ideal (every core at
   work, as in the pipeline), the second for comparison (not for ``latency``,
   which waits rather than computes);
3. the pipeline: both workers and the dispatcher, timed from the dispatcher's start
   to output.txt written; per-stage times and recognition calls from the workers'
   logs; peak RSS per process;
4. the baseline: the assignment's two scripts (bench/baseline.py), same models, same emulator,
   one call at a time on each side (never throttled: the scripts do not retry);
5. the emulator's own SQS rates from one client (SendMessage, ReceiveMessage, DeleteMessage),
   and what they allow: images per second if each message took one request of each.
Prints a table; ``--json`` writes the figures.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import multiprocessing
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .processes import peak_rss_mb, use_rows
from .timed import timed_dispatch

ROOT = Path(__file__).resolve().parents[1]
SEED = ROOT.parent / "shared" / "images" / "seed"
BUCKET = "bench-images"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _model_share(images, backend: str, taken, ready, shares) -> None:
    """One measuring process: after ``ready``, the next image not ``taken`` until none is left."""
    from carcelery import recognizers
    from carcelery.settings import settings

    recognizer = recognizers.get(backend)
    threshold = recognizers.threshold(recognizer, None)
    share = {"detect_s": 0.0, "text_s": 0.0, "cars": 0}
    ready.wait()
    while True:
        with taken.get_lock():
            index, taken.value = taken.value, taken.value + 1
        if index >= len(images):
            break
        name, data = images[index]
        image = recognizers.Image(name, functools.partial(bytes, data))  # bytes(data) is data: no copy
        started = time.perf_counter()
        labels = recognizer.labels(image)
        share["detect_s"] += time.perf_counter() - started
        if recognizers.car_confidence(labels) >= threshold:
            share["cars"] += 1
            # Where the pipeline reads it (CARCELERY_TEXT_REGION), as recognize_text does.
            regions = recognizers.text_regions([recognizers.to_dict(label) for label in labels], settings.text_region)
            started = time.perf_counter()
            recognizer.text(image, regions)
            share["text_s"] += time.perf_counter() - started
    shares.put(share)


def model_time(images, backend: str, processes: int = 1) -> dict:
    """Seconds of model work per stage (summed over processes), one thread per model.

    ``processes`` processes, models loaded, start together and take the images
    one at a time, as the workers do. Side by side they slow each other down
    (caches, memory bandwidth): that is the cost of using every core, which the
    pipeline pays too.
    """
    context = multiprocessing.get_context("spawn")
    taken, ready, shares = context.Value("i", 0), context.Barrier(processes), context.Queue()
    workers = [context.Process(target=_model_share, args=(images, backend, taken, ready, shares))
               for _ in range(processes)]
    for worker in workers:
        worker.start()
    got = [shares.get() for _ in workers]
    for worker in workers:
        worker.join()
    return {key: sum(share[key] for share in got) for key in ("detect_s", "text_s", "cars")}


def mean_model_time(before: dict, after: dict) -> dict:
    """The mean of two ``model_time`` answers per stage and in total, with the totals of each."""
    mean = {key: (before[key] + after[key]) / 2 for key in ("detect_s", "text_s")}
    return mean | {"total_s": mean["detect_s"] + mean["text_s"],
                   "before_pipeline": before["detect_s"] + before["text_s"],
                   "after_pipeline": after["detect_s"] + after["text_s"]}


def task_times(log: str, stage: str) -> dict:
    """Sums of the wall and CPU seconds of every ``stage`` task in a worker log."""
    found = re.findall(rf"stage={stage} .*time=([\d.]+)s cpu=([\d.]+)s", log)
    return {"time": sum(float(t) for t, _ in found), "cpu": sum(float(c) for _, c in found),
            "calls": len(found), "retried": len(re.findall(rf"stage={stage} transient error", log))}


def run_pipeline(stack, concurrency: tuple[int | None, int | None]) -> dict:
    from carcelery.pipeline import results

    stack.start_worker("worker_a", "detect", concurrency[0])
    stack.start_worker("worker_b", "text", concurrency[1])
    run = timed_dispatch(stack, "--bucket", BUCKET)
    output = stack.output_dir / results.OUTPUT
    rss = {name: peak_rss_mb(stack.procs[name].pid) for name in ("worker_a", "worker_b")}
    stack.stop("worker_b", "worker_a")
    detect, text = task_times(stack.log("worker_a"), "detect"), task_times(stack.log("worker_b"), "text")
    return {
        "wall_s": run["wall_s"], "exit_code": run["exit_code"],
        "output_sha256": hashlib.sha256(output.read_bytes()).hexdigest(),
        # Calls answered (as billed), and calls that failed and were retried (throttled).
        "calls": {"DetectLabels": detect["calls"], "DetectText": text["calls"]},
        "retried_calls": {"DetectLabels": detect["retried"], "DetectText": text["retried"]},
        "stage_s": {
            "dispatch_send": run["dispatch_send_s"],
            "detect_tasks_sum": detect["time"], "detect_tasks_cpu_sum": detect["cpu"],
            "text_tasks_sum": text["time"], "text_tasks_cpu_sum": text["cpu"],
        },
        "peak_rss_mb": rss,
        "cpu_s": run["cpu_s"],
    }


def run_baseline(stack) -> float:
    from carcelery import aws

    url = aws.client("sqs").create_queue(QueueName="bench-baseline")["QueueUrl"]
    env = {**stack.env, "CARCELERY_MODEL_THREADS": "0", "CARCELERY_OUTPUT_DIR": str(stack.workdir / "baseline"),
           "CARCELERY_THROTTLE": "0"}
    started = time.perf_counter()
    reader = subprocess.Popen([sys.executable, "-m", "bench.baseline", "text", url], cwd=ROOT, env=env)
    subprocess.run([sys.executable, "-m", "bench.baseline", "detect", url], cwd=ROOT, env=env, check=True)
    reader.wait()
    return time.perf_counter() - started


def sqs_rates(count: int = 300) -> dict:
    """The emulator's SQS operations per second, one client, one message per request."""
    from carcelery import aws

    sqs = aws.client("sqs")
    url = sqs.create_queue(QueueName="bench-rates")["QueueUrl"]
    rates, handles = {}, []
    started = time.perf_counter()
    for i in range(count):
        sqs.send_message(QueueUrl=url, MessageBody=str(i))
    rates["send_per_s"] = count / (time.perf_counter() - started)
    started = time.perf_counter()
    for _ in range(count):
        handles += [m["ReceiptHandle"] for m in sqs.receive_message(QueueUrl=url).get("Messages", [])]
    rates["receive_per_s"] = count / (time.perf_counter() - started)
    started = time.perf_counter()
    for handle in handles:
        sqs.delete_message(QueueUrl=url, ReceiptHandle=handle)
    rates["delete_per_s"] = len(handles) / (time.perf_counter() - started)
    return rates


def model_figures(images, backend: str, measure) -> tuple[tuple, dict]:
    """The ideal wall time from the models' time (``measure()`` runs the pipeline between two measurements)."""
    cores = os.cpu_count() or 1
    # Model time is measured before and after the pipeline, and averaged: this
    # machine's speed drifts by several per cent from one minute to the next.
    counts = sorted({1, cores})
    before = {n: model_time(images, backend, n) for n in counts}
    measured = measure()
    after = {n: model_time(images, backend, n) for n in counts}
    models = {n: mean_model_time(before[n], after[n]) for n in counts}
    # The ideal: the models' work spread over every core, measured with every core
    # at work (as in the pipeline); and, for comparison, measured one process alone.
    return measured, {"cars": before[1]["cars"], "model_s": models[cores], "model_s_one_process": models[1],
                      "ideal_s": models[cores]["total_s"] / cores, "ideal_one_process_s": models[1]["total_s"] / cores}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pipeline", description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--backend", choices=("local", "noop", "latency"), default="local")
    parser.add_argument("--latency", type=float, default=0.3, help="latency backend: seconds per call (default 0.3)")
    parser.add_argument("--throttle", type=float, default=0.0,
                        help="latency backend: fraction of calls throttled (default 0)")
    parser.add_argument("--concurrency", help="tasks in flight per worker, A,B (default: the configured, "
                                              "CARCELERY_CONCURRENCY, or per pool)")
    parser.add_argument("--seed-dir", type=Path, default=SEED)
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    concurrency = tuple(int(c) for c in args.concurrency.split(",")) if args.concurrency else (None, None)
    workdir = Path(tempfile.mkdtemp(prefix="carcelery-bench-"))
    # This process and every process it starts use the benchmark's own emulator.
    os.environ.update({"CARCELERY_TARGET": "emulator", "CARCELERY_EMULATOR_PORT": str(free_port()),
                       "CARCELERY_BUCKET": BUCKET, "CARCELERY_RECOGNIZER": args.backend,
                       "CARCELERY_OUTPUT_DIR": str(workdir / "output"), "CARCELERY_QUEUE_PREFIX": "bench-",
                       "CARCELERY_LATENCY": str(args.latency), "CARCELERY_THROTTLE": str(args.throttle)})
    from bench.images import variants
    from carcelery import aws
    from carcelery.pipeline import costs
    from carcelery.embedded.demo import Stack
    from carcelery.settings import settings

    images = variants(args.seed_dir, args.images)
    cores = os.cpu_count() or 1
    configured = settings.concurrency or cores

    def measure():
        with Stack(workdir) as stack:
            stack.start_emulator()
            for name, data in images:
                aws.client("s3").put_object(Bucket=BUCKET, Key=name, Body=data)
            return run_pipeline(stack, concurrency), run_baseline(stack), sqs_rates()

    if args.backend == "latency":
        # It waits rather than computes: no model time, no ideal from it.
        models: dict[str, Any] = {"cars": None}
        pipeline, baseline, rates = measure()
    else:
        (pipeline, baseline, rates), models = model_figures(images, args.backend, measure)
    cars = pipeline["calls"]["DetectText"] if models["cars"] is None else models["cars"]
    wall = pipeline["wall_s"]
    # What the emulator could pass from one client, one message per request: every
    # image is sent, received and deleted once on A's queue, a car image on B's too.
    per_message_s = sum(1 / rates[op] for op in ("send_per_s", "receive_per_s", "delete_per_s"))
    ceiling = 1 / (per_message_s * (1 + cars / args.images))
    figures: dict[str, Any] = {
        "images": args.images, "backend": args.backend, "cores": cores, "pool": settings.pool,
        "concurrency": [c or configured for c in concurrency],
        "cars": cars, "wall_s": wall, "images_per_s": args.images / wall,
        **{key: models[key] for key in ("model_s", "model_s_one_process") if key in models},
        **({"ideal_s": models["ideal_s"], "efficiency": models["ideal_s"] / wall,
            "ideal_one_process_s": models["ideal_one_process_s"],
            "efficiency_vs_one_process": models["ideal_one_process_s"] / wall} if "ideal_s" in models else {}),
        "baseline_wall_s": baseline, "baseline_images_per_s": args.images / baseline,
        "speedup_vs_baseline": baseline / wall,
        "calls": pipeline["calls"], "retried_calls": pipeline["retried_calls"],
        "output_sha256": pipeline["output_sha256"],
        "stage_s": pipeline["stage_s"], "peak_rss_mb": pipeline["peak_rss_mb"], "cpu_s": pipeline["cpu_s"],
        "emulator_sqs": rates, "emulator_ceiling_images_per_s": ceiling,
        "pipeline_vs_emulator": (args.images / wall) / ceiling,
        "exit_code": pipeline["exit_code"],
    }
    if args.backend == "latency":
        figures |= {"latency_s": args.latency, "throttle": args.throttle,
                    "cost_usd_at_rekognition_prices": costs.cost(pipeline["calls"], settings.region)}
    print(f"images {args.images} ({cars} cars), backend {args.backend}, {cores} cores, "
          f"pool {settings.pool}, workers A={figures['concurrency'][0]} B={figures['concurrency'][1]}")
    rows = [("pipeline wall", f"{wall:.2f} s"), ("images per second", f"{args.images / wall:.1f}")]
    if "ideal_s" in models:
        rows += [*((f"model time, {n} process{'es' * (n > 1)}", "detect {detect_s:.2f} s + text {text_s:.2f} s "
                    "(before {before_pipeline:.1f}, after {after_pipeline:.1f})".format(**models[key]))
                   for n, key in {cores: "model_s", 1: "model_s_one_process"}.items()),
                 ("ideal wall (model/cores)", f"{models['ideal_s']:.2f} s"), ("efficiency", f"{figures['efficiency']:.2f}"),
                 ("  against 1 process's model time", f"ideal {models['ideal_one_process_s']:.2f} s, "
                                                      f"efficiency {figures['efficiency_vs_one_process']:.2f}")]
    rows += [("baseline wall", f"{baseline:.2f} s ({args.images / baseline:.1f} images/s)"),
             ("speedup vs baseline", f"{baseline / wall:.2f}"),
             ("recognition calls", ", ".join(f"{api} {n}" for api, n in pipeline["calls"].items())
              + " (retried: " + ", ".join(f"{api} {n}" for api, n in pipeline["retried_calls"].items()) + ")"),
             ("dispatch send", f"{pipeline['stage_s']['dispatch_send']:.2f} s"),
             ("detect tasks (sum)", "{detect_tasks_sum:.2f} s, CPU {detect_tasks_cpu_sum:.2f} s".format(**pipeline["stage_s"])),
             ("text tasks (sum)", "{text_tasks_sum:.2f} s, CPU {text_tasks_cpu_sum:.2f} s".format(**pipeline["stage_s"])),
             ("emulator SQS send/recv/delete", "{send_per_s:.0f} / {receive_per_s:.0f} / {delete_per_s:.0f} per s"
              .format(**rates)),
             ("emulator ceiling (1 msg/request)", f"{ceiling:.1f} images/s; pipeline at {args.images / wall / ceiling:.2f}")]
    rows += use_rows(pipeline["cpu_s"], pipeline["peak_rss_mb"], digits=2)
    for label, value in rows:
        print(f"  {label:<32} {value}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return pipeline["exit_code"]


if __name__ == "__main__":
    sys.exit(main())
