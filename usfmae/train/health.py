"""Losses and the non-finite loss policy, kept on the device: no host sync and no collective per step.

Per micro-batch, `guard` adds the loss to device accumulators and returns what to back-propagate: the loss,
or, when it is not finite, the loss times NaN, so that every gradient of that backward is NaN. DeepSpeed
then skips the optimizer step on every rank through checks it makes anyway, after collectives it makes
anyway (DeepSpeed 0.19.8: ZeRO 1/2 all-reduce an overflow flag (bf16, fp16) or the gradient norm (fp32)
and skip the step when it is not finite; its BF16_Optimizer likewise; at ZeRO 0, which checks nothing,
`skip_non_finite_steps` below makes the optimizer skip it). A step is thus skipped whole when any
micro-batch of any rank had a non-finite loss; under fp16 the loss scale is also lowered, as for any
overflow.

The host learns what happened at the next sync point (a logging or checkpoint step): `settle` is one
all-reduce of [loss sum, finite losses, a vote, the caller's counts, one flag per step] and one read, which gives
the logged loss (the
mean of every finite micro-batch loss of every rank since the last settle), the steps skipped, and the
run of consecutive skipped steps, identical on every rank. A run of `max_bad_steps` is thus noticed, and
training stopped, at the first sync point after it: at most logging.every_steps - 1 steps late, steps
that were skipped too while the losses stayed non-finite.
"""

from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Settled:
    loss: float | None  # mean finite micro-batch loss since the last settle, over all ranks (None: none finite)
    skipped: int  # steps skipped since the last settle
    bad_in_row: int  # consecutive skipped steps up to the last one settled
    first_step: int  # the first step this settle covers
    stop_at: int | None  # the step at which max_bad_steps consecutive steps had been skipped, if any
    counts: list[int]  # the caller's counts (settle's `counts`) summed over the ranks
    vote: bool = False  # some rank voted (settle's `vote`): e.g. rank 0's clock says a checkpoint is due


class StepHealth:
    def __init__(self, device: torch.device, max_bad_steps: int, step: int = 0, skipped_total: int = 0):
        self.device, self.max_bad_steps = device, max_bad_steps
        self.settled_step, self.skipped_total, self.bad_in_row = step, skipped_total, 0
        self._reset()

    def _reset(self) -> None:
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        self.finite = torch.zeros((), dtype=torch.float64, device=self.device)
        self.step_bad = torch.zeros((), dtype=torch.bool, device=self.device)
        self.flags: list[torch.Tensor] = []  # per step since the last settle: a non-finite loss on this rank

    def guard(self, loss: torch.Tensor) -> torch.Tensor:
        """Count `loss` and return the loss to back-propagate (NaN everywhere if it is not finite)."""
        ok = torch.isfinite(loss.detach())
        self.loss_sum += torch.where(ok, loss.detach().double(), 0.0)
        self.finite += ok
        self.step_bad |= ~ok
        return loss * torch.where(ok, 1.0, float("nan")).to(loss.dtype)

    def end_step(self) -> None:
        self.flags.append(self.step_bad)
        self.step_bad = torch.zeros((), dtype=torch.bool, device=self.device)

    def settle(self, step: int, counts: torch.Tensor | None = None, vote: bool = False) -> Settled:
        """Collective: every rank, at the same step (so every rank gets the same answer). `counts`: float64 [n] on
        the device, this rank's numbers to sum over the ranks in the same all-reduce (the engine's data faults);
        `vote` rides along too: Settled.vote is true on every rank when any rank voted."""
        flags = torch.stack(self.flags).double() if self.flags else torch.zeros(0, dtype=torch.float64,
                                                                                  device=self.device)
        extra = counts if counts is not None else flags[:0]
        voted = torch.full((1,), float(vote), dtype=torch.float64, device=self.device)
        totals = torch.cat([self.loss_sum.view(1), self.finite.view(1), voted, extra, flags])
        if dist.is_initialized():
            dist.all_reduce(totals)
        values = totals.tolist()  # the host sync of this settle
        n = len(extra)
        summed, step_flags = [int(v) for v in values[3:3 + n]], values[3 + n:]
        first, stop_at = self.settled_step + 1, None
        for offset, bad in enumerate(step_flags):
            self.bad_in_row = self.bad_in_row + 1 if bad > 0 else 0
            if self.bad_in_row >= self.max_bad_steps and stop_at is None:
                stop_at = first + offset
        skipped = sum(v > 0 for v in step_flags)
        self.skipped_total += skipped
        self.settled_step = step
        self._reset()
        return Settled(values[0] / values[1] if values[1] else None, skipped, self.bad_in_row, first, stop_at, summed,
                       values[2] > 0)


def skip_non_finite_steps(optimizer: torch.optim.Optimizer):
    """ZeRO 0: DeepSpeed applies every step as it is, so the optimizer skips one whose gradients hold inf or
    NaN. The gradients were all-reduced before the step, so every rank decides alike. Fused AdamW takes the
    flag on the device (found_inf); other optimizers read it (a host sync per optimizer step)."""
    fused = bool(optimizer.defaults.get("fused"))

    def check(opt, args, kwargs):
        grads = [p.grad for group in opt.param_groups for p in group["params"] if p.grad is not None]
        if not grads:
            return
        bad = (~torch.isfinite(torch.stack(torch._foreach_norm(grads)).sum())).float()
        if fused:
            opt.found_inf = bad  # 0-dim, on the gradients' device: the kernel leaves weights and moments alone
        elif bad.item():
            for group in opt.param_groups:
                for p in group["params"]:
                    p.grad = None  # parameters without a gradient are not stepped

    return optimizer.register_step_pre_hook(check)
