"""A CPU stand-in for CUDA's sync debug mode: record the calls that make the host wait for the device."""

import sys
from pathlib import Path

import torch
from torch.overrides import TorchFunctionMode

TORCH_DIR = str(Path(torch.__file__).parent)


def caller() -> str:
    """The innermost frame outside torch and this file: who asked for the call."""
    frame = sys._getframe(2)
    while frame is not None and (frame.f_code.co_filename.startswith(TORCH_DIR) or
                                 frame.f_code.co_filename == __file__):
        frame = frame.f_back
    return f"{frame.f_code.co_filename}:{frame.f_lineno}" if frame is not None else "?"


# Tensor methods and torch functions that wait for the device (or copy from the host) when tensors live on
# an accelerator: scalar reads, Python truth/number conversions, shapes that depend on tensor data,
# device-to-host copies, and tensors built from Python data (a host-to-device copy).
SYNCING = {"item", "__bool__", "__int__", "__float__", "__index__", "tolist", "numpy", "cpu", "nonzero",
           "masked_select", "unique", "unique_consecutive", "bincount", "repeat_interleave", "tensor",
           "as_tensor", "from_numpy"}


class SyncRecorder(TorchFunctionMode):
    """Records the syncing calls made inside the `with` block, and `.to()` calls that name a device."""

    def __init__(self):
        super().__init__()
        self.calls: list[str] = []
        self.where: list[str] = []  # per call: the first frame outside torch, "path:line"

    def made_in(self, part: str) -> list[tuple[str, str]]:
        """(call, where) of the calls asked for from files whose path contains `part`."""
        return [(c, w) for c, w in zip(self.calls, self.where) if part in w]

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", str(func))
        # `.to(device, non_blocking=True)` is not recorded: from pinned memory it is an asynchronous copy
        if name in SYNCING or (name == "to" and not kwargs.get("non_blocking") and
                               any(isinstance(a, (str, torch.device)) for a in (*args[1:], *kwargs.values()))):
            self.calls.append(name)
            self.where.append(caller())
        return func(*args, **kwargs)
