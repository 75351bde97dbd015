"""A run of the dispatcher on a started stack, timed as every benchmark times it."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager

from .processes import cpu_s

MEASURED = ("emulator", "worker_a", "worker_b")  # the stack's processes whose CPU time is counted


def timed_dispatch(stack, *args: str,
                   watch: Callable[[int], AbstractContextManager] = contextlib.nullcontext) -> dict:
    """Run ``python -m carcelery.dispatch --wait ARGS`` on ``stack`` (its emulator and both workers started).

    Timed from the dispatcher's start to output.txt written. ``watch(pid)`` is
    entered with the dispatcher's PID while it runs.

    Returns:
      ``started`` (epoch seconds), ``wall_s``, ``dispatch_send_s`` (until it
      printed that it had dispatched), ``exit_code``, and ``cpu_s``: the CPU
      seconds of each of ``MEASURED`` meanwhile, by name.
    """
    from carcelery.embedded.demo import ROOT
    from carcelery.pipeline import results

    cpu_before = {name: cpu_s(stack.procs[name].pid) for name in MEASURED}
    started = time.time()
    proc = subprocess.Popen([sys.executable, "-m", "carcelery.dispatch", "--wait", *args],
                            cwd=ROOT, env=stack.env, stdout=subprocess.PIPE, text=True)
    sent_at = None
    assert proc.stdout is not None  # stdout=PIPE
    with watch(proc.pid):
        for line in proc.stdout:
            if sent_at is None and " dispatched " in line:
                sent_at = time.time()
        proc.wait()
    return {"started": started, "wall_s": (stack.output_dir / results.OUTPUT).stat().st_mtime - started,
            "dispatch_send_s": (sent_at or started) - started, "exit_code": proc.returncode,
            "cpu_s": {name: cpu_s(stack.procs[name].pid) - cpu_before[name] for name in MEASURED}}
