"""Fixtures of the trainer's unit tests."""

import os

import pytest

from usfmae.ports import free_port


@pytest.fixture(scope="session")
def process_group():
    """A one-rank gloo group in this process (what the deepspeed launcher sets up for one CPU rank), once per
    session: DeepSpeed keeps groups of the first one it saw, so a second group in the same process is refused."""
    import deepspeed
    import torch.distributed as dist

    port = free_port()
    saved = {k: os.environ.get(k) for k in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK")}
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    deepspeed.init_distributed(dist_backend="gloo", verbose=False)
    yield
    dist.destroy_process_group()
    for k, v in saved.items():
        os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
