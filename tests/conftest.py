"""Fixtures (plain helpers are in helpers.py): one torch thread, no network, a local Ray cluster on loopback."""

import os
import socket

import pytest
import torch

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

