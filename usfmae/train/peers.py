"""Which rank runs on which host, and a heartbeat that names a lost node within a bounded time.

A node that dies (power, kernel panic, SIGKILL) or drops off the network leaves its peers inside a collective.
A dead process's sockets are closed by its kernel, so gloo/NCCL fail at once with the peer's address in the
message; a cut cable or a frozen node sends nothing, and the collective would wait for the process-group
timeout (`deepspeed.timeout_minutes`, which must stay above the S3 retry budget: minutes to hours). So:

- at start-up every rank's (rank, host name, address) is gathered, to name a lost peer by rank and host;
- every rank runs a daemon thread that bumps its counter on the rendezvous store (the TCPStore at
  MASTER_ADDR:MASTER_PORT, on node 0) every `heartbeat_timeout_s / 6`. Rank 0's thread watches every
  counter; a counter that stands still for `deepspeed.heartbeat_timeout_s` means that rank is lost: rank 0
  prints which rank on which host and exits (exit code 5; its launcher then stops the node's other ranks).
  The other ranks' threads exit the same way when the store (node 0) stops answering;
- a collective that fails because a peer closed its connection is reported with the same names.
"""

from __future__ import annotations

import os
import re
import socket
import sys
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Callable

import torch.distributed as dist

EXIT_PEER_LOST = 5
KEY = "usfmae/heartbeat/{}"
DONE = 1 << 40  # added to a rank's counter when it finishes cleanly
RESUME_HINT = ("That node died or left the network; rerun the same command on the nodes that remain (same --output) "
               "to resume from the latest checkpoint")
_ADDRESS = re.compile(r"\[?(\d{1,3}(?:\.\d{1,3}){3})\]?")


@dataclass(frozen=True)
class Peer:
    rank: int
    host: str
    address: str

    def __str__(self) -> str:
        return f"rank {self.rank} on {self.host} ({self.address})"


def own_address(master: str) -> str:
    """The address this host uses towards the master: what its peers see as ours."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect((master, 9))  # UDP connect: picks the route and source address, sends nothing
            return s.getsockname()[0]
        except OSError:
            return "unknown"


def gather_peers(rank: int) -> list[Peer]:
    """Collective: every rank's (rank, host, address), indexed by rank."""
    me = Peer(rank, socket.gethostname(), own_address(os.environ.get("MASTER_ADDR", "127.0.0.1")))
    peers: list = [None] * dist.get_world_size()
    dist.all_gather_object(peers, me)
    return peers


def lost_peer_message(err: BaseException, peers: list[Peer], rank: int) -> str | None:
    """The clear message for a collective that failed because peers went away, naming them; None when `err`
    is not such a failure (it is then re-raised as it is)."""
    text = str(err)
    named = {m for m in _ADDRESS.findall(text)}
    lost = [p for p in peers if p.address in named and p.rank != rank]
    if not lost and not isinstance(err, getattr(dist, "DistBackendError", ())):
        return None
    who = ", ".join(map(str, lost)) if lost else "a peer (the collective gave no address)"
    first = text.strip().splitlines()[0][:300] if text.strip() else type(err).__name__
    return f"lost {who} during a collective on rank {rank}: {first}. {RESUME_HINT}"


class Heartbeat:
    """The heartbeat thread of one rank (see the module docstring). `on_lost(message)` defaults to printing the
    message and ending the process with EXIT_PEER_LOST."""

    def __init__(self, peers: list[Peer], rank: int, timeout_s: float, master: tuple[str, int],
                 on_lost: Callable[[str], None] | None = None):
        self.peers, self.rank, self.timeout_s = peers, rank, timeout_s
        self.period = timeout_s / 6
        self.on_lost = on_lost or _exit_lost
        self.store = dist.TCPStore(master[0], master[1], is_master=False, wait_for_workers=False,
                                   timeout=timedelta(seconds=timeout_s))
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="usfmae-heartbeat", daemon=True)

    def start(self) -> Heartbeat:
        self.thread.start()
        return self

    def stop(self) -> None:
        """A clean end: mark this rank finished (rank 0 stops watching it) and end the thread."""
        self._stop.set()
        self.thread.join(timeout=self.timeout_s)
        try:
            self.store.add(KEY.format(self.rank), DONE)
        except Exception:  # noqa: BLE001 - node 0 already gone at the end: nothing left to tell
            pass

    def _run(self) -> None:
        last = {p.rank: (-1, time.monotonic()) for p in self.peers}
        while not self._stop.wait(self.period):
            try:
                self.store.add(KEY.format(self.rank), 1)
                counts = {p.rank: self.store.add(KEY.format(p.rank), 0) for p in self.peers} if self.rank == 0 else {}
            except Exception as err:  # noqa: BLE001 - any store failure means node 0 is gone or unreachable
                if not self._stop.is_set():
                    self.on_lost(f"lost {self.peers[0]} (it holds the rendezvous store), seen from rank {self.rank}: "
                                 f"{type(err).__name__}: {str(err).strip()[:200]}. {RESUME_HINT}")
                return
            if self.rank != 0:
                continue
            now = time.monotonic()
            for r, count in counts.items():
                if count != last[r][0] or count >= DONE:
                    last[r] = (count, now)
            silent = [self.peers[r] for r, (_, seen) in last.items() if now - seen >= self.timeout_s]
            if silent and not self._stop.is_set():
                self.on_lost(f"lost {', '.join(map(str, silent))}: no heartbeat for {self.timeout_s:g} s "
                             f"(deepspeed.heartbeat_timeout_s). {RESUME_HINT}")
                return


def _exit_lost(message: str) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)
    os._exit(EXIT_PEER_LOST)  # the main thread may sit in a collective that never returns
