"""Shared test helpers: paths, free ports, a local Ray cluster bound to loopback."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from usfmae.cleaning.evaluate import real_us_folder
from usfmae.ports import free_port  # noqa: F401  (for tests)
from usfmae.testing.ray_local import auth_env, private_head

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# Ray clusters use token auth: every process the tests start shares one token (RAY_AUTH_TOKEN, or
# ~/.ray/auth_token when the machine has one).
os.environ.update(auth_env())


@pytest.fixture
def one_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy machine OpenMP's spinning
    makes two threads many times slower than one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test: nothing may be downloaded."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def run(cmd, timeout=600, **kw) -> subprocess.CompletedProcess:
    """Run a command, failing the test with its output when it exits non-zero."""
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, **kw)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(map(str, cmd))} exited {proc.returncode}\n--- stdout\n{proc.stdout[-6000:]}"
                    f"\n--- stderr\n{proc.stderr[-6000:]}")
    return proc


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory):
    """A real local Ray head node on 127.0.0.1; yields the job-submission (dashboard) address."""
    with private_head(tmp_path_factory.mktemp("ray")) as head:
        yield head.jobs


def real_us_file(name: str) -> Path:
    """One real ultrasound file, or skip the test saying where it was looked for."""
    folder, where = real_us_folder(REPO)
    if folder is None or not (folder / name).is_file():
        pytest.skip(f"real ultrasound file {name} not found ({where})")
    return folder / name
