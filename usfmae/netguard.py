"""A socket guard for firewall mode: refuse and record every non-loopback connection in this process.

Hospital sites run usfmae with no internet. To prove nothing phones home, `install()` patches the
standard library's socket layer so that any attempt to reach an address outside 127.0.0.0/8 and ::1
raises ConnectionRefusedError (what a firewall that rejects the packet looks like to the caller) and
appends one JSON line to the file named by $USFMAE_NETGUARD_LOG:

    {"pid": 123, "argv": ["..."], "op": "connect", "target": "93.184.216.34:443", "stack": ["file:line fn", ...]}

Unix-domain sockets (Ray's raylet and plasma store use them) and loopback TCP/UDP stay allowed; so do
the hosts named in $USFMAE_NETGUARD_ALLOW (comma-separated names or IPs: an in-hospital S3 endpoint).
Name lookups (getaddrinfo, gethostbyname[_ex]) of anything but localhost, literal IPs and this machine's
own name are refused before any DNS query.

Every Python process of a pipeline gets the guard through tests/firewall/sitecustomize.py on PYTHONPATH
(Ray workers and DeepSpeed ranks inherit the environment). Native code that opens sockets itself
(Ray's C++ raylet/GCS, gloo, NCCL) is outside its reach; those only talk to the addresses they are given.
"""

import ipaddress
import json
import os
import socket
import sys
import traceback

LOG_ENV = "USFMAE_NETGUARD_LOG"
ALLOW_ENV = "USFMAE_NETGUARD_ALLOW"
SEEN_ENV = "USFMAE_NETGUARD_SEEN"  # optional: every guarded process appends its pid and argv here

# Settings that keep the pipeline's libraries from reaching out on their own. Firewall mode and the
# Docker images set them; the guard then proves they were enough.
OFFLINE_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",  # Ray's usage telemetry
    # A cluster started with `ray start` still POSTs a "usage stats disabled" notice to Ray's server;
    # send it to the discard port on loopback instead (nothing listens: refused at once).
    "RAY_USAGE_STATS_REPORT_URL": "http://127.0.0.1:9/",
    "HF_HUB_OFFLINE": "1",  # timm/huggingface_hub: never ask the Hub for weights or metadata
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "DO_NOT_TRACK": "1",  # the cross-tool opt-out (honoured by several CLIs)
}

# One machine only: Ray turns --node-ip-address=127.0.0.1 into the host's interface address
# (services.resolve_ip_for_localhost), so its processes talk over a non-loopback address. "0" keeps them
# on 127.0.0.1, and also stops other nodes from joining: not for clusters.
SINGLE_MACHINE_RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}

# Ray's dashboard probes cloud metadata (169.254.169.254, metadata.google.internal) to label usage
# reports, even with usage stats off, unless this autoscaler file exists in $HOME; "{}" is enough.
RAY_BOOTSTRAP_FILE = "ray_bootstrap_config.yaml"

_ORIGINAL: dict[str, object] = {}


class NetworkBlocked(ConnectionRefusedError):
    """A connection to a non-loopback address attempted while the guard is installed."""


def _is_loopback_ip(text: str) -> bool:
    try:
        return ipaddress.ip_address(text.split("%", 1)[0]).is_loopback  # fe80::1%eth0 scope ids
    except ValueError:
        return False


def _local_names() -> set[str]:
    """Names /etc/hosts answers: localhost and this machine's own name (getfqdn is avoided: it asks DNS)."""
    names = {"localhost", "ip6-localhost", "ip6-loopback", ""}
    try:
        names.add(socket.gethostname().lower())
    except OSError:
        pass
    return names


def _allowed_hosts() -> set[str]:
    return {h.strip().lower() for h in os.environ.get(ALLOW_ENV, "").split(",") if h.strip()}


def host_allowed(host) -> bool:
    """True for loopback IPs, localhost names and $USFMAE_NETGUARD_ALLOW entries."""
    if host is None:
        return True  # getaddrinfo(None, port): the wildcard/loopback address of a server socket
    if isinstance(host, bytes):
        host = host.decode("idna", "replace")
    host = str(host).strip("[]").lower()
    return _is_loopback_ip(host) or host == "localhost" or host.endswith(".localhost") or host in _allowed_hosts()


def address_allowed(family: int, address) -> bool:
    """Whether a connect/sendto target may be reached: unix sockets, loopback, allowed hosts."""
    if family not in (socket.AF_INET, socket.AF_INET6) or not isinstance(address, tuple):
        return True  # AF_UNIX paths, netlink, ...: never leave the machine
    return host_allowed(address[0])


def _record(op: str, target, guard_frames: int = 2) -> None:
    """Append one JSON line describing the blocked attempt (O_APPEND: whole lines from many processes)."""
    path = os.environ.get(LOG_ENV)
    if not path:
        return
    frames = traceback.extract_stack()[:-1 - guard_frames][-30:]  # the caller's frames, not the guard's
    entry = {"pid": os.getpid(), "argv": sys.argv[:4], "op": op, "target": _describe(target),
             "stack": [f"{f.filename}:{f.lineno} {f.name}" for f in frames]}
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(entry) + "\n").encode())
    finally:
        os.close(fd)


def _describe(target) -> str:
    if isinstance(target, tuple) and len(target) >= 2:
        return f"{target[0]}:{target[1]}"
    return str(target)


def _block(op: str, target):
    _record(op, target)
    raise NetworkBlocked(f"usfmae firewall mode: {op} to {_describe(target)} refused (only loopback is allowed)")


def _guarded_connect(self, address):
    if not address_allowed(self.family, address):
        _block("connect", address)
    return _ORIGINAL["connect"](self, address)


def _guarded_connect_ex(self, address):
    if not address_allowed(self.family, address):
        _block("connect_ex", address)
    return _ORIGINAL["connect_ex"](self, address)


def _guarded_sendto(self, data, *args):
    address = args[-1]  # sendto(data, address) or sendto(data, flags, address)
    if not address_allowed(self.family, address):
        _block("sendto", address)
    return _ORIGINAL["sendto"](self, data, *args)


def _guarded_create_connection(address, *args, **kwargs):
    if not host_allowed(address[0]):
        _block("create_connection", address)
    return _ORIGINAL["create_connection"](address, *args, **kwargs)


def lookup_allowed(host) -> bool:
    """Name lookups that need no DNS server: loopback and allowed hosts, literal IPs (connect() then checks
    where they point), and this machine's own name (torch and Ray resolve it to pick an interface)."""
    if host_allowed(host) or _is_numeric(host):
        return True
    name = host.decode("idna", "replace") if isinstance(host, bytes) else str(host)
    return name.lower() in _LOCAL_NAMES


def _lookup_guard(name: str):
    """A replacement for socket.<name> (getaddrinfo, gethostbyname, ...) that refuses remote names."""
    def guarded(host, *args, **kwargs):
        if not lookup_allowed(host):
            _record(name, host, guard_frames=1)
            raise socket.gaierror(socket.EAI_NONAME, f"usfmae firewall mode: name lookup of {host!r} refused")
        return _ORIGINAL[name](host, *args, **kwargs)

    return guarded


def _is_numeric(host) -> bool:
    """A literal IP needs no DNS; connect() checks where it points."""
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    try:
        ipaddress.ip_address(str(host).strip("[]").split("%", 1)[0])
        return True
    except ValueError:
        return False


_LOCAL_NAMES: set[str] = set()
LOOKUPS = ("getaddrinfo", "gethostbyname", "gethostbyname_ex")
SOCKET_METHODS = {"connect": _guarded_connect, "connect_ex": _guarded_connect_ex, "sendto": _guarded_sendto}


def install() -> None:
    """Patch socket.socket.connect/connect_ex/sendto, socket.create_connection and the name lookups."""
    if _ORIGINAL:
        return
    _LOCAL_NAMES.update(_local_names())
    for name, guarded in SOCKET_METHODS.items():
        _ORIGINAL[name] = getattr(socket.socket, name)
        setattr(socket.socket, name, guarded)
    _ORIGINAL["create_connection"] = socket.create_connection
    socket.create_connection = _guarded_create_connection
    for name in LOOKUPS:
        _ORIGINAL[name] = getattr(socket, name)
        setattr(socket, name, _lookup_guard(name))
    seen = os.environ.get(SEEN_ENV)
    if seen:
        fd = os.open(seen, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (json.dumps({"pid": os.getpid(), "argv": sys.argv[:4]}) + "\n").encode())
        finally:
            os.close(fd)


def uninstall() -> None:
    """Restore the original socket functions."""
    for name in SOCKET_METHODS:
        if name in _ORIGINAL:
            setattr(socket.socket, name, _ORIGINAL[name])
    for name in ("create_connection", *LOOKUPS):
        if name in _ORIGINAL:
            setattr(socket, name, _ORIGINAL[name])
    _ORIGINAL.clear()


def installed() -> bool:
    return bool(_ORIGINAL)


def read_log(path) -> list[dict]:
    """The blocked attempts recorded in a log file (empty when the file does not exist)."""
    try:
        text = open(path, encoding="utf-8").read()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip()]
