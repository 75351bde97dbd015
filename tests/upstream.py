"""The installed libraries' own test suites, from their source packages on PyPI.

A subclass of a library's class must pass the library's tests of that class:
``source("kombu")`` is the source tree of the installed (pinned) kombu, where
its ``t/unit`` suite is. Downloaded once (``pip download --no-binary``) into
~/.cache/carcelery/upstream and kept; nothing of it is copied into the repo.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
from importlib.metadata import version
from pathlib import Path

CACHE = Path("~/.cache/carcelery/upstream").expanduser()


def source(package: str) -> Path:
    """The unpacked source package of the installed version of ``package``.

    Raises:
      subprocess.CalledProcessError: pip could not download it (no access to PyPI).
    """
    pinned = version(package)
    tree = CACHE / f"{package}-{pinned}"
    if tree.is_dir():
        return tree
    CACHE.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
                    "--no-binary", ":all:", "--no-deps", f"{package}=={pinned}", "--dest", str(CACHE)],
                   check=True, capture_output=True)
    with tarfile.open(CACHE / f"{package}-{pinned}.tar.gz") as archive:
        archive.extractall(CACHE, filter="data")
    return tree
