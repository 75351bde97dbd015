"""What a process tree has used: peak memory and CPU time, of a process and all its descendants."""

from __future__ import annotations

import re
from pathlib import Path

import psutil


def tree(pid: int) -> list[psutil.Process]:
    """``pid``'s process and its descendants (none if it has ended)."""
    try:
        process = psutil.Process(pid)
        return [process, *process.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def peak_rss_mb(pid: int) -> dict[str, float]:
    """VmHWM of ``pid`` and of its descendants, in MB, by PID.

    psutil gives the current RSS only; the kernel's peak (VmHWM) is read from /proc.
    """
    peaks = {}
    for process in tree(pid):
        try:
            status = Path(f"/proc/{process.pid}/status").read_text()
        except FileNotFoundError:  # ended since
            continue
        found = re.search(r"VmHWM:\s+(\d+) kB", status)
        if found:  # a kernel thread has none
            peaks[str(process.pid)] = int(found.group(1)) / 1024
    return peaks


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by ``pid`` and its live descendants."""
    seconds = 0.0
    for process in tree(pid):
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:  # ended since
            continue
        seconds += times.user + times.system
    return seconds


def use_rows(cpu: dict[str, float], peaks: dict[str, dict[str, float]], digits: int = 1) -> list[tuple[str, str]]:
    """Table rows (label, value) of ``cpu_s`` and ``peak_rss_mb`` answers, by process name."""
    return ([(f"CPU during the run, {name}", f"{seconds:.{digits}f} s") for name, seconds in cpu.items()]
            + [(f"peak RSS {name}", ", ".join(f"{mb:.0f}" for mb in tree_peaks.values()) + " MB")
               for name, tree_peaks in peaks.items()])
