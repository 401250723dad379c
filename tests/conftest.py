"""Fixtures (plain helpers are in helpers.py): one torch thread, no network, a local Ray cluster on loopback,
simulated hosts."""

import os
import signal
import socket

import pytest
import torch

from usfmae.testing.hosts import HostBox, unavailable
from usfmae.testing.ray_local import auth_env, private_head

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


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory):
    """A real local Ray head node on 127.0.0.1; yields the job-submission (dashboard) address."""
    with private_head(tmp_path_factory.mktemp("ray")) as head:
        yield head.jobs



@pytest.fixture
def host_box(tmp_path, request):
    """Two simulated hosts (network namespaces, node-local /node and /dev/shm) and S3 on the bridge; skipped
    without root or iproute2. Torn down after the test, failed or not; a SIGTERM to pytest runs the teardown
    too, and a SIGKILLed run is swept by the next box."""
    if reason := unavailable():
        pytest.skip(reason)
    box = HostBox(2, tmp_path / "hosts")
    request.addfinalizer(box.down)
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, signal.default_int_handler)  # KeyboardInterrupt: pytest tears down
        request.addfinalizer(lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL))
    return box.up()
