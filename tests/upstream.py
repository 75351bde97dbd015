"""The installed libraries' own test suites, from their source packages on PyPI.

A subclass of a library's class must pass the library's tests of that class:
``source("kombu")`` is the source tree of the installed (pinned) kombu, where
its ``t/unit`` suite is. ``scripts/setup`` downloads them (``python
tests/upstream.py``: ``pip download --no-binary`` from the package index) into
~/.cache/carcelery/upstream, so that the tests themselves reach no network;
nothing of them is copied into the repo.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
from importlib.metadata import version
from pathlib import Path

CACHE = Path("~/.cache/carcelery/upstream").expanduser()
# The libraries whose suites run against carcelery's subclasses (and Flower's, against its broker class).
SUITES = ("kombu", "celery", "flower")


def source(package: str) -> Path:
    """The unpacked source package of the installed version of ``package``.

    Raises:
      FileNotFoundError: not downloaded yet; scripts/setup does it.
    """
    tree = CACHE / f"{package}-{version(package)}"
    if not tree.is_dir():
        raise FileNotFoundError(f"{tree} is missing: run scripts/setup (it downloads {package}'s source package)")
    return tree


def download(package: str) -> Path:
    """Download and unpack the source package of the installed version of ``package``, unless it is there.

    Raises:
      subprocess.CalledProcessError: pip could not download it (no access to the package index).
    """
    pinned = version(package)
    tree = CACHE / f"{package}-{pinned}"
    if not tree.is_dir():
        CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
                        "--no-binary", ":all:", "--no-deps", f"{package}=={pinned}", "--dest", str(CACHE)],
                       check=True)
        with tarfile.open(CACHE / f"{package}-{pinned}.tar.gz") as archive:
            archive.extractall(CACHE, filter="data")
    return tree


if __name__ == "__main__":
    for name in SUITES:
        print(f"{name}'s tests: {download(name)}")
