"""Fixtures of the data tests: moto's real S3 server on loopback."""

import os

import pytest


@pytest.fixture(scope="session")
def moto_s3():
    from usfmae.testing.s3proxy import moto_endpoint

    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    with moto_endpoint() as url:
        yield url
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
