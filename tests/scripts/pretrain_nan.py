"""launch/pretrain.py with a loss that turns non-finite after $NAN_AFTER training forward passes (of each rank),
until $NAN_UNTIL forward passes if set (then finite again), on rank $NAN_RANK only if set.

Run under the real deepspeed launcher by tests/e2e/test_trainer_health.py.
"""

import os
import runpy
import sys
from pathlib import Path

from usfmae.model.mae import MaskedAutoencoderViT

_calls = {"n": 0}
_forward_loss = MaskedAutoencoderViT.forward_loss
_after, _until = int(os.environ["NAN_AFTER"]), int(os.environ.get("NAN_UNTIL", 10**9))
_this_rank = os.environ.get("NAN_RANK") in (None, os.environ.get("RANK"))


def forward_loss(self, imgs, pred, mask):
    loss = _forward_loss(self, imgs, pred, mask)
    if self.training:
        _calls["n"] += 1
        if _this_rank and _after < _calls["n"] <= _until:
            return loss * float("nan")
    return loss


if __name__ == "__main__":
    MaskedAutoencoderViT.forward_loss = forward_loss
    sys.argv[0] = str(Path(__file__).resolve().parents[2] / "launch" / "pretrain.py")
    runpy.run_path(sys.argv[0], run_name="__main__")
