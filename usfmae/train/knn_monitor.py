"""The frozen-encoder k-NN monitor, beside training rather than in its way.

Rank 0 copies the current weights into a private fp32 model (at a step boundary, on the training thread)
and measures them in a background thread on its own device; training goes on meanwhile and no other rank
ever waits, so the monitor cannot hold ranks past the process-group timeout however long it takes. A
measurement still running when the next one is due is skipped (and logged). Results are collected by the
training thread (`poll`), which does all logging.
"""

import threading
from typing import Callable

import torch
import torch.nn as nn


class BackgroundKnn:
    def __init__(self, make_model: Callable[[], nn.Module], knn_data: str, device: torch.device, seed: int):
        self.make_model, self.knn_data, self.device, self.seed = make_model, knn_data, device, seed
        self.model: nn.Module | None = None
        self.thread: threading.Thread | None = None
        self.done: list[dict] = []  # finished results, taken by poll()
        self.lock = threading.Lock()

    def busy(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def submit(self, source: nn.Module, step: int, epoch: int) -> bool:
        """Start measuring `source`'s current weights; False (nothing started) while the last one runs."""
        if self.busy():
            return False
        if self.model is None:
            self.model = self.make_model().to(self.device).eval()
        with torch.no_grad():
            self.model.load_state_dict(source.state_dict())  # copies (and casts bf16/fp16 to fp32)
        self.thread = threading.Thread(target=self._run, args=(step, epoch), name=f"knn-step{step}", daemon=True)
        self.thread.start()
        return True

    def _run(self, step: int, epoch: int) -> None:
        from ..eval.probe import monitor_knn

        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)  # the current device is per thread
        try:
            values = monitor_knn(self.model, self.knn_data, device=self.device, seed=self.seed)
            result = {"step": step, "epoch": epoch, **{f"knn/{k}": v for k, v in values.items()}}
        except Exception as e:  # noqa: BLE001 - a monitor must not end a long run; reported by poll()
            result = {"event": "knn_failed", "step": step, "error": f"{type(e).__name__}: {e}"}
        with self.lock:
            self.done.append(result)

    def poll(self) -> list[dict]:
        with self.lock:
            out, self.done = self.done, []
        return out

    def join(self) -> list[dict]:
        if self.thread is not None:
            self.thread.join()
        return self.poll()
