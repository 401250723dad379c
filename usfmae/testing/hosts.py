"""Hosts in a box: N network namespaces on a private bridge, each a separate "machine", plus one S3 endpoint.

    with HostBox(2, Path("/tmp/box")) as box:          # needs root and iproute2 (`unavailable()` says why not)
        box.run(0, ["hostname", "-I"])                  # a command on host 0
        worker = box.popen(1, ["ray", "start", ...])    # a long-running one on host 1
        box.s3_url                                      # moto's HTTP server on the bridge address

What makes each namespace a host:
- its own network stack: one veth `eth0` on a bridge with its own address (10.x.y.2, .3, ...), loopback, and
  no default route, so only the box's addresses and loopback carry traffic; the bridge address (10.x.y.1, in
  the root namespace) serves S3. IP forwarding stays as it is (off on a normal machine): nothing is routed out;
- its own hostname (`<tag>h<i>`, in /etc/hosts of every host), and its own node-local folders: every command
  runs in a private mount namespace where the host's scratch folder is bind-mounted on /node and its own tmpfs
  on /dev/shm, so the same path names a different folder on each host (`box.node(i)` is that folder seen from
  outside). Everything else of the filesystem is shared, as a shared filesystem would be.

Names (namespaces, links, mounts) carry a tag made from the owner's pid, so two boxes never clash; each box is
recorded in /run/usfmae-hosts/<tag>.json, and every new box first tears down the recorded boxes whose owner is
dead (a killed test). Teardown kills every process in the namespaces (`ip netns pids`), deletes the namespaces
and the bridge and unmounts the tmpfs. `python -m usfmae.testing.hosts up|exec|down|sweep` does the same by hand.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import itertools
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from usfmae.netguard import OFFLINE_ENV
from usfmae.ports import free_port
from usfmae.testing.s3proxy import moto_endpoint

RECORDS = Path("/run/usfmae-hosts")
NODE = Path("/node")  # the node-local folder's path on every host
SHM_SIZE = "2g"
FAKE_AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
_serial = itertools.count()


def unavailable() -> str | None:
    """Why hosts cannot be simulated here (None when they can): root, iproute2 and unshare are needed."""
    if os.geteuid() != 0:
        return "network-namespace hosts need root (ip netns add, mount)"
    missing = [tool for tool in ("ip", "unshare", "mount") if shutil.which(tool) is None]
    if missing:
        return f"network-namespace hosts need {', '.join(missing)} (iproute2, util-linux)"
    probe = f"usfprobe{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"`ip netns add` fails here: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


@dataclass
class Record:
    """What one box created, enough to tear it down from another process."""

    tag: str
    pid: int
    root: str
    subnet: str
    hosts: int
    started: int = 0  # the owner's start time (clock ticks since boot): a reused pid is not the owner

    @property
    def namespaces(self) -> list[str]:
        return [f"{self.tag}h{i}" for i in range(self.hosts)]

    @property
    def bridge(self) -> str:
        return f"{self.tag}br"

    def address(self, i: int) -> str:
        """Host i's address; the bridge (root namespace) is .1."""
        return str(ipaddress.ip_network(self.subnet)[i + 2])

    @property
    def bridge_address(self) -> str:
        return str(ipaddress.ip_network(self.subnet)[1])

    def host_dir(self, i: int) -> Path:
        return Path(self.root) / f"host{i}"

    def command(self, i: int, argv: list) -> list[str]:
        """`argv` run on host i: its network namespace, hostname and node-local mounts."""
        d = self.host_dir(i)
        setup = ('hostname "$1" && mount --bind "$2" "$3" && mount --bind "$4" /dev/shm && '
                 'mount --bind "$5" /etc/hosts && shift 5 && exec "$@"')
        return ["ip", "netns", "exec", self.namespaces[i], "unshare", "--uts", "--mount", "--propagation", "slave",
                "sh", "-c", setup, "sh", self.namespaces[i], str(d / "node"), str(NODE), str(d / "shm"),
                str(d / "hosts"), *map(str, argv)]


def _sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def _pick_subnet(tag: str) -> str:
    """A /24 under 10.64.0.0/10 that no address of the root namespace is in (other boxes included)."""
    used = _sh("ip", "-o", "-4", "addr", "show").stdout
    start = int.from_bytes(bytes.fromhex(secrets.token_hex(2)), "big") % 16384
    for k in range(16384):
        n = (start + k) % 16384
        net = f"10.{64 + n // 256}.{n % 256}"
        if f" {net}." not in used:
            return f"{net}.0/24"
    raise RuntimeError("no free /24 under 10.64.0.0/10 for the hosts' bridge")


def _started(pid: int) -> int:
    """When process `pid` started (clock ticks since boot), 0 when there is no such process."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return 0


def kill_host(namespace: str) -> list[int]:
    """SIGKILL every process in `namespace` (what a node's power cut does); returns their pids."""
    killed = []
    for _ in range(50):  # processes may fork while we kill
        pids = [int(p) for p in _sh("ip", "netns", "pids", namespace, check=False).stdout.split()]
        if not pids:
            return killed
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        killed += pids
        time.sleep(0.1)
    raise RuntimeError(f"processes in {namespace} survive SIGKILL: {pids}")


def tear_down(rec: Record) -> None:
    """Remove everything `rec` describes; safe to repeat and on a half-built box."""
    existing = set(_sh("ip", "netns", "list", check=False).stdout.split())
    for ns in rec.namespaces:
        if ns in existing:
            kill_host(ns)
            _sh("ip", "netns", "del", ns, check=False)
    _sh("ip", "link", "del", rec.bridge, check=False)  # the veths went with their namespaces
    for i in range(rec.hosts):
        shm = rec.host_dir(i) / "shm"
        while os.path.ismount(shm):
            _sh("umount", "-l", str(shm), check=False)
    (RECORDS / f"{rec.tag}.json").unlink(missing_ok=True)


def sweep() -> list[str]:
    """Tear down the boxes whose owning process is gone (a killed test run). Returns their tags."""
    swept = []
    for path in sorted(RECORDS.glob("*.json")) if RECORDS.is_dir() else []:
        try:
            rec = Record(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            continue
        if _started(rec.pid) != rec.started:
            tear_down(rec)
            swept.append(rec.tag)
    return swept


class HostBox:
    """N hosts and an S3 endpoint; a context manager (`up()` / `down()` for the same by hand)."""

    def __init__(self, hosts: int, root: Path, s3: bool = True):
        self.rec = Record(f"usf{os.getpid()}{chr(97 + next(_serial) % 26)}", os.getpid(), str(Path(root).resolve()),
                          "", hosts, _started(os.getpid()))
        self.s3 = s3
        self.s3_server = contextlib.ExitStack()  # moto's server, stopped by down()
        self.procs: list[subprocess.Popen] = []

    # -- what tests use
    @property
    def addresses(self) -> list[str]:
        return [self.rec.address(i) for i in range(self.rec.hosts)]

    @property
    def s3_url(self) -> str:
        return f"http://{self.rec.bridge_address}:{self.s3_port}"

    def namespace(self, i: int) -> str:
        return self.rec.namespaces[i]

    def node(self, i: int) -> Path:
        """Host i's /node, as seen from the root namespace."""
        return self.rec.host_dir(i) / "node"

    def env(self, extra: dict | None = None) -> dict:
        """The environment for commands on the hosts: offline settings, fake AWS credentials, the S3 endpoint,
        gloo/NCCL on eth0, temporary files node-local (as a node's /tmp is), no proxies (nothing leaves the box)."""
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        env.update(OFFLINE_ENV, GLOO_SOCKET_IFNAME="eth0", NCCL_SOCKET_IFNAME="eth0", TMPDIR=f"{NODE}/tmp", **FAKE_AWS)
        if self.s3:
            env["USFMAE_S3_ENDPOINT_URL"] = env["AWS_ENDPOINT_URL"] = self.s3_url  # ours, and boto3's own
        env.update(extra or {})
        return env

    def command(self, i: int, argv: list) -> list[str]:
        return self.rec.command(i, argv)

    def popen(self, i: int, argv: list, log: Path | None = None, env: dict | None = None, **kw) -> subprocess.Popen:
        """Start `argv` on host i in its own session, output to `log` (default: inherited)."""
        out = open(log, "w") if log else None  # noqa: SIM115 - the child holds it
        proc = subprocess.Popen(self.command(i, argv), stdout=out, stderr=subprocess.STDOUT if out else None,
                                env=env or self.env(), start_new_session=True, **kw)
        if out:
            out.close()
        self.procs.append(proc)
        return proc

    def run(self, i: int, argv: list, timeout: float = 600, env: dict | None = None,
            check: bool = True, **kw) -> subprocess.CompletedProcess:
        proc = subprocess.run(self.command(i, argv), capture_output=True, text=True, timeout=timeout,
                              env=env or self.env(), **kw)
        if check and proc.returncode != 0:
            raise RuntimeError(f"host {i}: {' '.join(map(str, argv))} exited {proc.returncode}\n"
                               f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
        return proc

    def kill(self, i: int) -> list[int]:
        """SIGKILL every process of host i."""
        return kill_host(self.namespace(i))

    def cut(self, i: int) -> None:
        """Unplug host i's cable: its link goes down, packets vanish (no reset reaches its peers)."""
        _sh("ip", "link", "set", f"{self.rec.tag}v{i}", "down")

    # -- lifecycle
    def up(self) -> HostBox:
        sweep()
        RECORDS.mkdir(parents=True, exist_ok=True)
        rec = self.rec
        rec.subnet = _pick_subnet(rec.tag)
        (RECORDS / f"{rec.tag}.json").write_text(json.dumps(asdict(rec)))
        try:
            self._build()
            if self.s3:
                self._start_s3()
        except BaseException:
            self.down()
            raise
        return self

    def _build(self) -> None:
        rec, prefix = self.rec, ipaddress.ip_network(self.rec.subnet).prefixlen
        _sh("ip", "link", "add", rec.bridge, "type", "bridge")
        _sh("ip", "addr", "add", f"{rec.bridge_address}/{prefix}", "dev", rec.bridge)
        _sh("ip", "link", "set", rec.bridge, "up")
        NODE.mkdir(exist_ok=True)  # the mount point; empty outside the hosts
        names = "".join(f"{rec.address(i)} {ns}\n" for i, ns in enumerate(rec.namespaces))
        for i, ns in enumerate(rec.namespaces):
            veth, d = f"{rec.tag}v{i}", rec.host_dir(i)
            _sh("ip", "netns", "add", ns)
            _sh("ip", "link", "add", veth, "type", "veth", "peer", "name", f"{rec.tag}p{i}")
            _sh("ip", "link", "set", f"{rec.tag}p{i}", "netns", ns)
            _sh("ip", "-n", ns, "link", "set", f"{rec.tag}p{i}", "name", "eth0")
            _sh("ip", "-n", ns, "addr", "add", f"{rec.address(i)}/{prefix}", "dev", "eth0")
            _sh("ip", "-n", ns, "link", "set", "eth0", "up")
            _sh("ip", "-n", ns, "link", "set", "lo", "up")
            _sh("ip", "link", "set", veth, "master", rec.bridge)
            _sh("ip", "link", "set", veth, "up")
            (d / "node/tmp").mkdir(parents=True, exist_ok=True)
            (d / "shm").mkdir(exist_ok=True)
            _sh("mount", "-t", "tmpfs", "-o", f"size={SHM_SIZE},mode=1777", "tmpfs", str(d / "shm"))
            (d / "hosts").write_text(f"127.0.0.1 localhost\n::1 localhost\n{names}")

    def _start_s3(self) -> None:
        self.s3_port = free_port()
        self.s3_server.enter_context(moto_endpoint(self.rec.bridge_address, self.s3_port))

    def down(self) -> None:
        self.s3_server.close()
        tear_down(self.rec)
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=30)

    def __enter__(self) -> HostBox:
        return self.up()

    def __exit__(self, *exc) -> None:
        self.down()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start the box and keep it (and its S3) up until Ctrl-C")
    up.add_argument("--hosts", type=int, default=2)
    up.add_argument("--root", type=Path, required=True, help="folder for the hosts' node-local folders")
    ex = sub.add_parser("exec", help="run a command on one host of a running box")
    ex.add_argument("tag")
    ex.add_argument("host", type=int)
    ex.add_argument("argv", nargs=argparse.REMAINDER)
    down = sub.add_parser("down", help="tear a box down by its tag")
    down.add_argument("tag")
    sub.add_parser("sweep", help="tear down every box whose owner died")
    args = ap.parse_args(argv)
    if reason := unavailable():
        print(f"error: {reason}", file=sys.stderr)
        return 2
    if args.cmd == "up":
        with HostBox(args.hosts, args.root) as box:
            print(json.dumps({"tag": box.rec.tag, "hosts": box.addresses, "namespaces": box.rec.namespaces,
                              "s3": box.s3_url, "node_dirs": [str(box.node(i)) for i in range(args.hosts)],
                              "env": {k: box.env()[k] for k in ("USFMAE_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL", *FAKE_AWS)}}, indent=1),
                  flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
                while True:
                    time.sleep(3600)
        return 0
    if args.cmd == "sweep":
        print("\n".join(sweep()))
        return 0
    rec = Record(**json.loads((RECORDS / f"{args.tag}.json").read_text()))
    if args.cmd == "down":
        tear_down(rec)
        return 0
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    return subprocess.run(rec.command(args.host, argv)).returncode


if __name__ == "__main__":
    sys.exit(main())
