"""Free loopback ports for rendezvous (DeepSpeed's MASTER_PORT), local Ray clusters and test servers."""

import socket


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (the OS picks it; a race is possible but
    harmless for local launches and tests)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
