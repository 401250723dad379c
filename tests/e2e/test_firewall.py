"""Firewall mode: the pipeline runs with every non-loopback connection refused, and nothing tries one.

Every Python process gets usfmae.netguard's socket guard through tests/firewall/sitecustomize.py on
PYTHONPATH (Ray workers, the dashboard, DeepSpeed's launcher and ranks inherit it); blocked attempts go to
a log the test reads. Where this machine allows it (root, `unshare`, `ip`), each command also runs in a
fresh network namespace holding only loopback, which fences native code (raylet, gloo) as well.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
from functools import lru_cache

import pytest
import torch
from torch.utils.cpp_extension import get_default_build_root

from usfmae import netguard
from usfmae.ports import free_port
from usfmae.testing.synthetic import write_corpus, write_labeled

from helpers import BIN, REPO, run

GUARD_DIR = REPO / "tests/firewall"


@lru_cache(maxsize=1)
def loopback_only_prefix() -> tuple[str, ...]:
    """Command prefix running a program in a new network namespace with only `lo` up, if permitted."""
    prefix = ("unshare", "--net", "sh", "-c", 'ip link set lo up && exec "$@"', "sh")
    if not (shutil.which("unshare") and shutil.which("ip")):
        return ()
    probe = subprocess.run([*prefix, "true"], capture_output=True)
    return prefix if probe.returncode == 0 else ()


def firewall_env(tmp_path) -> dict:
    """The documented firewall-mode environment for one machine, plus the guard on PYTHONPATH and its logs."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    # what the Docker images ship in the user's home, so Ray's dashboard skips its cloud-metadata probe
    (home / netguard.RAY_BOOTSTRAP_FILE).write_text("# usfmae: present so Ray does not probe cloud metadata servers\n{}\n")
    # HOME moves to keep the stub out of the real home; keep using the real torch-extensions cache so
    # DeepSpeed's CPU op is not rebuilt (an explicit TORCH_EXTENSIONS_DIR gets no pyXY_cuZZ subfolder).
    tag = f"cu{torch.version.cuda.replace('.', '')}" if torch.version.cuda else "cpu"
    extensions = os.environ.get("TORCH_EXTENSIONS_DIR") or os.path.join(
        get_default_build_root(), f"py{sys.version_info.major}{sys.version_info.minor}_{tag}")
    python_path = os.pathsep.join(filter(None, [str(GUARD_DIR), os.environ.get("PYTHONPATH")]))
    return {**os.environ, **netguard.OFFLINE_ENV, **netguard.SINGLE_MACHINE_RAY_ENV, "HOME": str(home),
            "TORCH_EXTENSIONS_DIR": extensions, "PYTHONPATH": python_path, "PYTHONUNBUFFERED": "1",
            netguard.LOG_ENV: str(tmp_path / "blocked.jsonl"), netguard.SEEN_ENV: str(tmp_path / "guarded.jsonl")}


def fenced(cmd) -> list:
    return [*loopback_only_prefix(), *cmd]


PROBE = r"""
import json, os, socket, urllib.request
out = {}
def attempt(name, fn):
    try:
        fn(); out[name] = "ok"
    except OSError as err:
        out[name] = type(err).__name__
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(); port = srv.getsockname()[1]
attempt("loopback", lambda: socket.create_connection(("127.0.0.1", port), timeout=5).close())
attempt("localhost", lambda: socket.create_connection(("localhost", port), timeout=5).close())
# 0.0.0.0 is not loopback by address, yet the kernel delivers it locally: a safe target to refuse.
attempt("any_tcp", lambda: socket.create_connection(("0.0.0.0", port), timeout=5).close())
attempt("any_udp", lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("0.0.0.0", port)))
attempt("any_connect_ex", lambda: socket.socket().connect_ex(("0.0.0.0", port)))
attempt("http", lambda: urllib.request.urlopen("http://usfmae-firewall-test.invalid/", timeout=5))
attempt("resolve", lambda: socket.getaddrinfo("usfmae-firewall-test.invalid", 80))
attempt("byname", lambda: socket.gethostbyname("usfmae-firewall-test.invalid"))
attempt("own_name", lambda: socket.getaddrinfo(socket.gethostname(), port))
path = os.path.join(os.environ["PROBE_DIR"], "s.sock")
unix = socket.socket(socket.AF_UNIX); unix.bind(path); unix.listen()
attempt("unix", lambda: socket.socket(socket.AF_UNIX).connect(path))
print(json.dumps(out))
"""


def probe(tmp_path, **extra_env) -> dict:
    env = {**firewall_env(tmp_path), "PROBE_DIR": str(tmp_path), **extra_env}
    proc = run(fenced([BIN / "python", "-c", PROBE]), env=env)
    return json.loads(proc.stdout.splitlines()[-1])


def test_guard_refuses_non_loopback_and_records_it(tmp_path):
    out = probe(tmp_path)
    assert out == {"loopback": "ok", "localhost": "ok", "any_tcp": "NetworkBlocked", "any_udp": "NetworkBlocked",
                   "any_connect_ex": "NetworkBlocked", "http": "URLError", "resolve": "gaierror",
                   "byname": "gaierror", "own_name": "ok", "unix": "ok"}
    log = netguard.read_log(tmp_path / "blocked.jsonl")
    assert [(e["op"], e["target"].split(":")[0]) for e in log] == [
        ("create_connection", "0.0.0.0"), ("sendto", "0.0.0.0"), ("connect_ex", "0.0.0.0"),
        ("create_connection", "usfmae-firewall-test.invalid"), ("getaddrinfo", "usfmae-firewall-test.invalid"),
        ("gethostbyname", "usfmae-firewall-test.invalid")]
    assert len({e["pid"] for e in log}) == 1 and all(e["stack"] for e in log)


def test_allow_list_opens_named_hosts(tmp_path):
    out = probe(tmp_path, **{netguard.ALLOW_ENV: "0.0.0.0"})
    assert out["any_tcp"] == "ok" and out["any_udp"] == "ok"
    assert [e["op"] for e in netguard.read_log(tmp_path / "blocked.jsonl")] == \
        ["create_connection", "getaddrinfo", "gethostbyname"]


def test_install_and_uninstall_swap_the_socket_functions():
    originals = (socket.socket.connect, socket.create_connection, socket.getaddrinfo, socket.gethostbyname)
    netguard.install()
    try:
        assert netguard.installed() and socket.getaddrinfo is not originals[2]
        assert socket.socket.connect is not originals[0] and socket.create_connection is not originals[1]
    finally:
        netguard.uninstall()
    assert (socket.socket.connect, socket.create_connection, socket.getaddrinfo, socket.gethostbyname) == originals
    assert not netguard.installed()


def test_address_rules():
    assert netguard.host_allowed("127.3.2.1") and netguard.host_allowed("::1") and netguard.host_allowed("[::1]")
    assert netguard.host_allowed("localhost") and netguard.host_allowed("ray-head.localhost")
    assert not netguard.host_allowed("10.0.0.1") and not netguard.host_allowed("example.com")
    assert not netguard.host_allowed("::ffff:8.8.8.8") and not netguard.host_allowed("0.0.0.0")
    assert netguard.address_allowed(socket.AF_UNIX, "/tmp/ray/session/sockets/raylet")
    assert not netguard.address_allowed(socket.AF_INET6, ("2001:db8::1", 443, 0, 0))
    assert netguard.lookup_allowed("127.0.0.1") and netguard.lookup_allowed("203.0.113.7")  # literal: no DNS
    assert not netguard.lookup_allowed("metadata.google.internal")


@pytest.mark.slow
def test_pipeline_runs_behind_the_firewall_and_nothing_phones_home(tmp_path):
    env = firewall_env(tmp_path)
    corpus, shards, pre, ft = tmp_path / "corpus", tmp_path / "shards", tmp_path / "pre", tmp_path / "ft"
    write_corpus(corpus, 40, seed=5, size=128)
    labeled = write_labeled(tmp_path / "labeled", n_per_class=8, seed=6, size=64)

    # 1. shards: the Ray job run directly (it starts a private local Ray), cleaning with tesseract
    run(fenced([BIN / "python", REPO / "preprocessing/build_shards.py", "--input", corpus, "--output", shards,
                "--shard-size", "20"]), env=env)
    assert json.loads((shards / "manifest.json").read_text())["total_samples"] == 40
    # 2. pretraining: `usfmae pretrain --nproc 2` execs `deepspeed --num_gpus 2 --module usfmae.commands.pretrain`
    run(fenced([BIN / "usfmae", "pretrain", "--nproc", "2", "--master-port", str(free_port()), "--cpu",
                "--config", REPO / "configs/pretrain_tiny.yaml", "--shards", shards, "--output", pre,
                "--max-steps", "3", "--set", "logging.every_steps=1"]), env=env, cwd=REPO)
    steps = [json.loads(line) for line in (pre / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in steps if "loss" in r] == [1, 2, 3]
    # 3. fine-tuning from the pretraining export
    run(fenced([BIN / "usfmae", "finetune", "--checkpoint", pre / "model.safetensors", "--data", labeled,
                "--output", ft, "--set", "epochs=1", "--set", "batch_size=8", "--set", "num_workers=0"]), env=env)
    assert "macro" in json.loads((ft / "metrics.json").read_text())

    blocked = netguard.read_log(tmp_path / "blocked.jsonl")
    assert blocked == [], "phoned home:\n" + "\n".join(
        f"{e['op']} {e['target']} from {e['argv'][0]}\n    " + "\n    ".join(e["stack"][-6:]) for e in blocked)
    guarded = [" ".join(e["argv"]) for e in netguard.read_log(tmp_path / "guarded.jsonl")]
    # the ranks run `python -m usfmae.commands.pretrain`: when the guard starts, Python's argv[0] is still "-m"
    for process in ("preprocessing/build_shards.py", "ray/_private/workers/default_worker.py",
                    "ray/dashboard/dashboard.py", "bin/usfmae pretrain", "bin/deepspeed",
                    "-m --local_rank=0", "-m --local_rank=1", "bin/usfmae finetune"):
        assert any(process in argv for argv in guarded), f"{process} ran without the guard:\n" + "\n".join(guarded)
