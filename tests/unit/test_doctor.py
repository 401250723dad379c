"""`usfmae doctor`: every row present, failures come with a fix, exit code 1 on FAIL."""

import os
import sys
import stat

import boto3
import pytest
from moto.server import ThreadedMotoServer

from usfmae import doctor
from usfmae.netguard import OFFLINE_ENV, RAY_BOOTSTRAP_FILE
from usfmae.ports import free_port

from helpers import BIN

ROWS = ["tesseract", "tesseract-api", "torch", "cuda", "nccl", "deepspeed", "deepspeed ops", "ray", "offline", "s3", "disk",
        "/dev/shm"]


def fake_tesseract(folder, version_line: str, langs: str = "eng"):
    """A stand-in `tesseract` on PATH printing the given version and language list."""
    folder.mkdir(exist_ok=True)
    exe = folder / "tesseract"
    exe.write_text(f'#!/bin/sh\nif [ "$1" = "--list-langs" ]; then printf "List of languages:\\n{langs}\\n"; '
                   f'else echo "{version_line}"; fi\n')
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    return folder


def test_every_row_is_in_the_table(tmp_path):
    checks = doctor.run_checks(tmp_path)
    assert [c.name for c in checks] == ROWS
    assert {c.status for c in checks} <= {"OK", "WARN", "SKIP", "FAIL"}
    assert next(c for c in checks if c.name == "tesseract").status == "OK"  # installed on this machine
    assert next(c for c in checks if c.name == "s3").status == "SKIP"
    table = doctor.format_table(checks).splitlines()
    assert table[0].split() == ["check", "status", "detail", "fix"] and len(table) == 2 + len(ROWS)
    for row, check in zip(table[2:], checks):
        assert row.startswith(check.name) and f"  {check.status}  " in row


def test_missing_tesseract_fails_the_doctor_with_a_fix(tmp_path):
    import subprocess

    empty = tmp_path / "bin"
    empty.mkdir()
    env = {**os.environ, "PATH": str(empty)}
    proc = subprocess.run([str(BIN / "usfmae"), "doctor", "--output", str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    row = next(line for line in proc.stdout.splitlines() if line.startswith("tesseract"))
    assert "FAIL" in row and "no tesseract binary on PATH" in row and "apt-get install tesseract-ocr" in row
    assert "1 check(s) failed: tesseract" in proc.stdout


def test_tesseract_version_and_language_data(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(fake_tesseract(tmp_path / "old", "tesseract 3.05.02")))
    assert doctor.check_tesseract().status == "WARN"
    monkeypatch.setenv("PATH", str(fake_tesseract(tmp_path / "nolang", "tesseract 5.3.0", langs="osd")))
    check = doctor.check_tesseract()
    assert check.status == "FAIL" and "eng" in check.detail and "tesseract-ocr-eng" in check.fix
    monkeypatch.setenv("PATH", str(fake_tesseract(tmp_path / "good", "tesseract v5.4.1.20240606")))
    check = doctor.check_tesseract()
    assert check.status == "OK" and "5.4.1" in check.detail


def test_in_process_ocr_engine_is_checked(monkeypatch):
    check = doctor.check_tesseract_api()
    assert check.status == "OK" and "tesserocr" in check.detail and "tessdata" in check.detail
    monkeypatch.setitem(sys.modules, "tesserocr", None)
    check = doctor.check_tesseract_api()
    assert check.status == "WARN" and "falls back" in check.detail and "pip install tesserocr" in check.fix


def test_disk_thresholds_and_a_folder_not_created_yet(tmp_path):
    assert doctor.check_disk(tmp_path / "runs/new", warn_gib=0, fail_gib=0).status == "OK"
    warn = doctor.check_disk(tmp_path, warn_gib=1e9, fail_gib=0)
    assert warn.status == "WARN" and str(tmp_path) in warn.detail
    fail = doctor.check_disk(tmp_path, fail_gib=1e9)
    assert fail.status == "FAIL" and fail.fix


def test_small_shm_warns_with_the_docker_fix(tmp_path):
    check = doctor.check_shm(tmp_path, warn_gib=1e9)
    assert check.status == "WARN" and "--shm-size" in check.fix
    assert doctor.check_shm(tmp_path / "absent").status == "WARN"


def test_offline_settings(tmp_path, monkeypatch):
    for key in OFFLINE_ENV:
        monkeypatch.delenv(key, raising=False)
    check = doctor.check_offline(home=tmp_path)
    assert check.status == "WARN" and "RAY_USAGE_STATS_ENABLED=0" in check.fix and RAY_BOOTSTRAP_FILE in check.fix
    for key, value in OFFLINE_ENV.items():
        monkeypatch.setenv(key, value)
    (tmp_path / RAY_BOOTSTRAP_FILE).write_text("{}\n")
    assert doctor.check_offline(home=tmp_path).status == "OK"


def test_deepspeed_ops_are_probed_without_building(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))  # an empty JIT cache
    check = doctor.check_deepspeed_ops()
    assert "accelerator cpu" in check.detail and "deepspeed_shm_comm: not built" in check.detail
    assert check.status == "WARN" and "JIT-compile" in check.detail
    assert list(tmp_path.iterdir()) == []  # nothing was compiled


def test_cpu_machine_rows():
    cuda = doctor.check_cuda()
    assert cuda.status == "WARN"  # no GPU here: CPU runs only, with the fix for a GPU node
    assert "--cpu" in cuda.detail and "deepspeed.device: cpu" in cuda.detail  # never a silent CPU fallback
    assert doctor.check_nccl().status == "OK"
    assert doctor.check_torch().status == "OK"


@pytest.fixture(scope="module")
def moto():
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port())
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    client = boto3.client("s3", endpoint_url=url)
    client.create_bucket(Bucket="shards")
    client.put_object(Bucket="shards", Key="openus46/manifest.json", Body=b"{}")
    try:
        yield url
    finally:
        server.stop()
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


def test_s3_reachable_bucket(moto):
    check = doctor.check_s3("s3://shards/openus46", moto)
    assert check.status == "OK" and "has objects" in check.detail and "credentials: env" in check.detail


def test_s3_missing_bucket_and_unreachable_endpoint(moto):
    check = doctor.check_s3("s3://nope/x", moto)
    assert check.status == "FAIL" and "create the bucket 'nope'" in check.fix
    dead = f"http://127.0.0.1:{free_port()}"
    check = doctor.check_s3("s3://shards/openus46", dead)
    assert check.status == "FAIL" and "unreachable" in check.detail and "--endpoint-url" in check.fix
    assert doctor.check_s3("http://shards/x", moto).status == "FAIL"


def test_s3_without_credentials(tmp_path, monkeypatch):
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-role lookup off this machine
    check = doctor.check_s3("s3://shards/x", f"http://127.0.0.1:{free_port()}")
    assert check.status == "FAIL" and "AWS_ACCESS_KEY_ID" in check.fix
