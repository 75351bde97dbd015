"""The benchmark runs and reports what it promises (its figures are not judged here)."""

import hashlib
import json
import os
import subprocess
import sys

import pytest

from bench.images import variants
from bench.processes import cpu_s, peak_rss_mb
from carcelery.embedded.demo import ROOT


def test_variants_are_distinct_jpegs(seed_dir):
    made = variants(seed_dir, 25)
    assert len(made) == 25 and len({name for name, _ in made}) == 25
    assert len({hashlib.sha256(data).digest() for _, data in made}) == 25
    assert all(data.startswith(b"\xff\xd8") for _, data in made)
    assert made[0][0] == "1-from-1.jpg" and made[16][0] == "17-from-7.jpg"


def test_a_process_peak_memory_and_cpu_time():
    sum(range(3_000_000))  # some CPU time
    peaks = peak_rss_mb(os.getpid())
    assert str(os.getpid()) in peaks and peaks[str(os.getpid())] > 10
    assert cpu_s(os.getpid()) > 0
    no_such_pid = 2**22 + 1  # above the largest PID Linux allows
    assert peak_rss_mb(no_such_pid) == {} and cpu_s(no_such_pid) == 0


def run_bench(tmp_path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    """``python -m bench.pipeline --images 12 ARGS``, ended well: what it printed, and its figures."""
    figures = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, "-m", "bench.pipeline", "--images", "12", *args, "--json", str(figures)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return done, json.loads(figures.read_text())


@pytest.mark.integration
def test_benchmark_reports_its_figures(seed_dir, tmp_path):
    done, got = run_bench(tmp_path, "--backend", "noop")
    for key in ("images", "wall_s", "images_per_s", "ideal_s", "efficiency", "baseline_wall_s",
                "speedup_vs_baseline", "ideal_one_process_s", "efficiency_vs_one_process", "stage_s", "peak_rss_mb", "cpu_s", "emulator_sqs", "pipeline_vs_emulator"):
        assert key in got, key
    assert got["images"] == 12 and got["wall_s"] > 0 and got["baseline_wall_s"] > 0
    assert got["calls"] == {"DetectLabels": 12, "DetectText": 12}, "noop: every image a car"
    assert set(got["peak_rss_mb"]) == {"worker_a", "worker_b"}
    assert "pipeline wall" in done.stdout


@pytest.mark.integration
def test_benchmark_of_a_waiting_recognizer_counts_its_calls(seed_dir, tmp_path):
    _, got = run_bench(tmp_path, "--backend", "latency", "--latency", "0.01", "--throttle", "0.2")
    assert got["pool"] == "threads" and got["baseline_images_per_s"] > 0 and "ideal_s" not in got
    assert got["calls"]["DetectLabels"] == 12 and got["calls"]["DetectText"] == got["cars"] > 0
    assert got["cost_usd_at_rekognition_prices"] > 0


@pytest.mark.integration
def test_emulator_patches_benchmark_reports_a_configuration():
    # One configuration's process, small: the whole benchmark runs each configuration three times.
    done = subprocess.run([sys.executable, "-m", "bench.emulator_patches", "--leave-out", "backends_cached",
                           "--queued", "100", "--in-flight", "20", "--items", "50"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    for key in ("sqs_send", "sqs_receive", "sqs_delete", "dynamodb_query", "dynamodb_transact", "small_request"):
        assert got[key] > 0, f"{key}: every request measured takes CPU time"
    # Garbage collector pauses: as many as the full passes, the longest one of them.
    assert isinstance(got["gc_full_passes"], int)
    assert 0 <= got["gc_max_pause_ms"] <= got["gc_total_pause_ms"]
    assert (got["gc_full_passes"] == 0) == (got["gc_total_pause_ms"] == 0)


def test_scale_out_benchmark_reads_the_text_tasks_a_worker_finished():
    from bench.scale_out import text_done

    log = ("[2026-12-04 19:03:32,430: INFO/MainProcess] carcelery.tasks.recognize_text[81f2]: image=11.jpg "
           "stage=text lines=0 time=1.503s cpu=0.000s\n"
           "[2026-12-04 19:03:32,463: INFO/MainProcess] Task carcelery.tasks.recognize_text[81f2] succeeded in 1.5s\n"
           "[2026-12-04 19:03:33,000: INFO/MainProcess] carcelery.tasks.detect_car[9]: image=12.jpg stage=detect car=no\n"
           "[2026-12-04 19:03:33,930: INFO/MainProcess] carcelery.tasks.recognize_text[7a]: image=a b.jpg stage=text "
           "transient error, retrying\n")
    [(stamp, image)] = text_done(log)
    assert image == "11.jpg" and stamp % 60 == pytest.approx(32.43)


@pytest.mark.integration
def test_memory_benchmark_measures_each_stage_and_the_bounds_refuse(tmp_path):
    figures = tmp_path / "memory.json"
    done = subprocess.run([sys.executable, "-m", "bench.memory", "--quick", "--json", str(figures)],
                          check=False, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    cases = json.loads(figures.read_text())["cases"]
    assert [(c["stage"], c["input"].split(" ")[0]) for c in cases] == [
        ("detect, text", "object"), ("report picture", "object"), ("detect, text", "PNG"), ("report picture", "PNG")]
    # Refused before anything large is held: the over-limit object unread, the 1 GB decode not made.
    assert all(c["outcome"].startswith(("ObjectTooLarge", "TooLarge")) for c in cases), cases
    assert all(0 < c["peak_mb"] and c["added_mb"] < 100 for c in cases), cases
    assert "peak" in done.stdout
