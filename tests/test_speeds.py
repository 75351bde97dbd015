"""The two speeds: a unit test (not marked integration) cannot start a process or reach the emulator."""

import multiprocessing
import os
import re
import socket
import subprocess

import pytest

REFUSED = pytest.raises(AssertionError, match=re.escape("mark it @pytest.mark.integration"))


def test_a_unit_test_starts_no_process():
    with REFUSED:
        subprocess.run(["true"])
    with REFUSED:
        os.fork()
    with REFUSED:
        os.system("true")
    for method in ("fork", "spawn"):
        with REFUSED:
            multiprocessing.get_context(method).Process(target=print).start()


def test_a_unit_test_does_not_reach_the_emulator():
    with socket.socket() as sock, REFUSED:
        sock.connect(("127.0.0.1", int(os.environ["CARCELERY_EMULATOR_PORT"])))
