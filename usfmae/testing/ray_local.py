"""A private local Ray head for the demo and the tests: loopback only, free ports, token auth, stopped by pid.

    with private_head(Path("tmp/ray")) as head:
        subprocess.run(["ray", "job", "submit", f"--address={head.jobs}", "--", ...], env=head.env)

Never `ray stop`: that would also stop every other cluster of the user on the machine.
"""

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from usfmae.ports import free_port

RAY = str(Path(sys.executable).with_name("ray"))


def auth_env(env: dict | None = None) -> dict:
    """`env` (default os.environ) with Ray token auth on and a token every process of the cluster shares.

    Ray 2.5x clusters use token auth; `ray start` refuses to start one without a token. A token already
    in the environment or in ~/.ray/auth_token is kept; otherwise a fresh one goes into RAY_AUTH_TOKEN.
    """
    env = dict(os.environ if env is None else env)
    env.setdefault("RAY_AUTH_MODE", "token")
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    has_file = Path(env.get("RAY_AUTH_TOKEN_PATH", Path.home() / ".ray" / "auth_token")).is_file()
    if "RAY_AUTH_TOKEN" not in env and not has_file:
        env["RAY_AUTH_TOKEN"] = secrets.token_hex(16)
    return env


@dataclass(frozen=True)
class RayHead:
    gcs: str  # host:port for ray.init(address=...) / --ray-address
    jobs: str  # http://host:port for `ray job submit --address`
    env: dict = field(repr=False)  # the environment the head runs with; clients need its auth settings


@contextlib.contextmanager
def private_head(temp: Path, num_cpus: int = 2, env: dict | None = None, timeout_s: float = 180) -> Iterator[RayHead]:
    """Start `ray start --head --block` on 127.0.0.1 with every port free-picked; stop exactly it on exit.

    The dashboard agent's default port 52365 and the client server's 10001 would clash with any other
    cluster on the machine, so they are picked too. SIGTERM to the blocking `ray start` ends the
    processes it started; its own process group is killed if it does not exit within a minute.
    """
    temp = Path(temp).resolve()
    temp.mkdir(parents=True, exist_ok=True)
    env = auth_env(env)
    gcs, jobs = free_port(), free_port()
    log = temp / "head.log"
    cmd = [RAY, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={gcs}",
           "--dashboard-host=127.0.0.1", f"--dashboard-port={jobs}", f"--dashboard-agent-listen-port={free_port()}",
           f"--ray-client-server-port={free_port()}", f"--num-cpus={num_cpus}", "--disable-usage-stats",
           f"--temp-dir={temp}"]
    head = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True, env=env)
    try:
        deadline = time.monotonic() + timeout_s
        while "block forever" not in log.read_text():
            if head.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the local Ray head did not start (log {log}):\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield RayHead(f"127.0.0.1:{gcs}", f"http://127.0.0.1:{jobs}", env)
    finally:
        head.send_signal(signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
