"""A CPU stand-in for CUDA's sync debug mode: record the calls that make the host wait for the device."""

import torch
from torch.overrides import TorchFunctionMode

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

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", str(func))
        if name in SYNCING or (name == "to" and any(isinstance(a, (str, torch.device))
                                                    for a in (*args[1:], *kwargs.values()))):
            self.calls.append(name)
        return func(*args, **kwargs)
