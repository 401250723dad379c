"""The simulated hosts are separate machines as far as addresses, node-local folders and routes go, reach S3 on
the bridge and nothing else, and leave nothing behind: not after a test, not after a SIGKILLed owner."""

import json
import os
import signal
import subprocess
import sys

import pytest

from usfmae.testing.hosts import NODE, RECORDS, HostBox, unavailable

S3_PROBE = ("import boto3, socket, sys; c = boto3.client('s3'); c.create_bucket(Bucket=sys.argv[1]); "
            "print(socket.gethostname(), sorted(b['Name'] for b in c.list_buckets()['Buckets']))")
ESCAPE_PROBE = ("import socket; s = socket.socket(); s.settimeout(2)\n"
                "try: s.connect(('192.0.2.1', 80)); print('connected')\n"
                "except OSError as e: print(type(e).__name__, e.errno)")


def leftovers(tag: str) -> list[str]:
    """Namespaces, links, mounts and records of box `tag` still present."""
    found = [n for n in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
             if n.startswith(tag)]
    found += [line for line in subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout.splitlines()
              if tag in line]
    found += [line for line in open("/proc/mounts") if tag in line]
    return found + [str(p) for p in RECORDS.glob(f"{tag}*")]


def test_hosts_are_separate_machines_that_reach_s3_and_nothing_else(host_box):
    box = host_box
    for i in (0, 1):
        box.run(i, ["sh", "-c", f"echo {i} > /node/who && touch /dev/shm/{box.rec.tag}-mine"])
    assert [(box.node(i) / "who").read_text() for i in (0, 1)] == ["0\n", "1\n"]  # same path, two folders
    assert not (NODE / "who").exists() and not list(NODE.iterdir())
    assert not [p for p in os.listdir("/dev/shm") if box.rec.tag in p]  # each host has its own /dev/shm
    for i in (0, 1):
        shown = box.run(i, ["sh", "-c", "hostname; ip -o -4 addr show eth0; ip route"]).stdout.splitlines()
        assert shown[0] == box.namespace(i) and f" {box.addresses[i]}/24 " in shown[1]
        assert len(shown) == 3 and "default" not in shown[2]  # the subnet only: no way out
        assert box.run(i, [sys.executable, "-c", ESCAPE_PROBE]).stdout.split()[0] == "OSError"  # unreachable
    out = [box.run(i, [sys.executable, "-c", S3_PROBE, f"box{i}"]).stdout.strip().split(maxsplit=1) for i in (0, 1)]
    assert out[0] == [box.namespace(0), "['box0']"] and out[1] == [box.namespace(1), "['box0', 'box1']"]  # one S3
    ping = box.run(1, [sys.executable, "-c", f"import socket; socket.create_connection(('{box.namespace(0)}', "
                       f"{box.s3_url.rsplit(':', 1)[1]}), 2)"], check=False)
    assert "ConnectionRefused" in ping.stderr  # host 0's name resolves to its address, where nothing listens
    sleeper = box.popen(1, ["sleep", "600"])
    box.down()
    assert sleeper.wait(timeout=30) == -signal.SIGKILL and leftovers(box.rec.tag) == []


def test_a_killed_owners_box_is_swept_by_the_next_one(tmp_path):
    if reason := unavailable():
        pytest.skip(reason)
    owner = subprocess.Popen([sys.executable, "-m", "usfmae.testing.hosts", "up", "--hosts", "1", "--root",
                              str(tmp_path / "dead")], stdout=subprocess.PIPE, text=True, start_new_session=True)
    lines = []
    while not lines or lines[-1] != "}\n":
        lines.append(owner.stdout.readline())
        assert lines[-1], "the box did not come up"
    tag = json.loads("".join(lines[lines.index("{\n"):]))["tag"]  # after moto's own start-up line
    sleeper = subprocess.Popen(["ip", "netns", "exec", f"{tag}h0", "sleep", "600"])
    assert leftovers(tag)
    os.killpg(owner.pid, signal.SIGKILL)
    owner.wait()
    assert leftovers(tag)  # nothing cleaned up by the dead owner
    with HostBox(1, tmp_path / "next", s3=False) as box:
        assert leftovers(tag) == [] and sleeper.wait(timeout=30) == -signal.SIGKILL
    assert leftovers(box.rec.tag) == []
