"""Lost peers are named by rank and host: from a failed collective's message, and by the heartbeat on a real
TCPStore when a rank goes silent (a cut network) or the store's node goes away."""

import threading
import time
from datetime import timedelta

import torch.distributed as dist

from usfmae.ports import free_port
from usfmae.train.peers import Heartbeat, Peer, lost_peer_message

PEERS = [Peer(0, "node-a", "10.0.0.2"), Peer(1, "node-b", "10.0.0.3")]
GLOO = ("[/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:561] Connection closed by peer "
        "[10.0.0.3]:51343. This is typically caused by a remote worker crashing.")


def test_a_failed_collective_names_the_peer_that_closed_it():
    message = lost_peer_message(RuntimeError(GLOO), PEERS, rank=0)
    assert message.startswith("lost rank 1 on node-b (10.0.0.3) during a collective on rank 0: [/__w/pytorch")
    assert "resume from the latest checkpoint" in message
    assert lost_peer_message(RuntimeError("shape mismatch [4, 3]"), PEERS, rank=0) is None  # not a lost peer


class Lost:
    def __init__(self):
        self.messages, self.event = [], threading.Event()

    def __call__(self, message):
        self.messages.append(message)
        self.event.set()


def test_heartbeat_names_a_silent_rank_and_ignores_one_that_finished():
    port = free_port()
    server = dist.TCPStore("127.0.0.1", port, is_master=True, wait_for_workers=False, timeout=timedelta(seconds=5))
    seen = Lost()
    watcher = Heartbeat(PEERS, 0, 1.2, ("127.0.0.1", port), on_lost=seen).start()
    finished = Heartbeat(PEERS, 1, 1.2, ("127.0.0.1", port), on_lost=seen).start()
    time.sleep(0.5)
    finished.stop()  # a clean end: marked done
    assert not seen.event.wait(2.5) and watcher.thread.is_alive()
    watcher.stop()

    port = free_port()  # a new run: a fresh store
    server = dist.TCPStore("127.0.0.1", port, is_master=True, wait_for_workers=False, timeout=timedelta(seconds=5))
    seen = Lost()
    watcher = Heartbeat(PEERS, 0, 1.2, ("127.0.0.1", port), on_lost=seen).start()
    silent = Heartbeat(PEERS, 1, 1.2, ("127.0.0.1", port), on_lost=seen).start()
    time.sleep(0.5)
    silent._stop.set()  # dies without a word, like a node behind a cut cable
    assert seen.event.wait(5)
    assert seen.messages == ["lost rank 1 on node-b (10.0.0.3): no heartbeat for 1.2 s (deepspeed.heartbeat_timeout_s). "
                             "That node died or left the network; rerun the same command on the nodes that remain "
                             "(same --output) to resume from the latest checkpoint"]
    watcher.stop()
    del server


def test_heartbeat_of_another_rank_names_node_0_when_the_store_goes():
    port = free_port()
    server = dist.TCPStore("127.0.0.1", port, is_master=True, wait_for_workers=False, timeout=timedelta(seconds=5))
    seen = Lost()
    beat = Heartbeat(PEERS, 1, 1.2, ("127.0.0.1", port), on_lost=seen).start()
    assert not seen.event.wait(2)  # only rank 0 judges silence; the others watch the store
    
    del server  # node 0 and its store are gone
    assert seen.event.wait(5)
    assert seen.messages[0].startswith("lost rank 0 on node-a (10.0.0.2) (it holds the rendezvous store), seen from "
                                       "rank 1: ")
    beat.thread.join(5)
