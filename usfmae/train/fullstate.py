"""Full fp32 weights and AdamW state of a DeepSpeed engine by parameter name, whatever its partitioning.

This is what makes checkpoints independent of the world size: `gather` assembles every trainable
parameter's fp32 master copy and AdamW moments from the ranks' partitions (ZeRO 1/2 and DeepSpeed's
BF16_Optimizer keep each parameter's fp32 data as fragments of one flat partition per rank, described by
DeepSpeed's tensor-fragment mapping `param._hp_mapping`, the one its safe_get_full_* API reads), and
`scatter` writes full tensors back into whatever partitioning the new engine has. ZeRO stage 0 in fp32
has no partitions: the torch AdamW holds the model's own parameters.

Names are those of the plain model (no `module.`, no `_orig_mod.`), so compile on/off does not matter.
"""

from dataclasses import dataclass, field

import torch
import torch.distributed as dist
import torch.nn as nn

MOMENTS = ("exp_avg", "exp_avg_sq")
LOSS_SCALER_FIELDS = ("cur_scale", "cur_iter", "last_overflow_iter", "cur_hysteresis")
# Elements per reduce in gather: 32 Mi fp32 (128 MiB of device memory at a time); ViT-B's 112M parameters
# take 4 buckets per kind instead of one reduce per tensor (~250 per kind).
BUCKET_NUMEL = 32 * 1024 * 1024


@dataclass
class FullState:
    weights: dict[str, torch.Tensor] = field(default_factory=dict)  # fp32, CPU: trainable parameters
    moments: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)  # {"exp_avg": {name: t}, ...}
    adam_step: int = 0  # AdamW's own step count (bias correction); fp16 overflow steps do not count
    loss_scaler: dict = field(default_factory=dict)  # fp16 dynamic loss scale


class EngineState:
    """Reads and writes the full training state of `engine`, whose model is `model` (uncompiled)."""

    def __init__(self, engine, model: nn.Module):
        self.engine = engine
        self.named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.adam = engine.basic_optimizer  # the torch AdamW (its params: flat fp32 partitions, or the model's)
        self.partitioned = any(hasattr(p, "_hp_mapping") for _, p in self.named)
        if not self.partitioned and engine.optimizer is not self.adam:
            raise RuntimeError(f"unsupported DeepSpeed optimizer wrapper {type(engine.optimizer).__name__}: "
                               "usfmae carries state for ZeRO 1/2 and for fp32 stage 0")

    # ------------------------------------------------------------------ where the fp32 data lives
    def _flat(self, p: nn.Parameter) -> torch.Tensor:
        return self.adam.param_groups[p._hp_mapping.param_group_index]["params"][0]

    def _source(self, p: nn.Parameter, key: str | None) -> torch.Tensor | None:
        """This rank's fp32 data of p (weights or a moment): its fragment, or p itself when unpartitioned."""
        if not self.partitioned:
            return p.detach() if key is None else self.adam.state.get(p, {}).get(key)
        m = p._hp_mapping
        if m is None:  # no fragment of p on this rank
            return None
        flat = self._flat(p)
        data = flat.detach() if key is None else self.adam.state.get(flat, {}).get(key)
        return None if data is None else data.narrow(0, m.hp_fragment_address.start, m.hp_fragment_address.numel)

    def _buckets(self) -> list[list[tuple[str, nn.Parameter]]]:
        """The trainable parameters in order, grouped into runs of at most BUCKET_NUMEL elements (one per
        parameter larger than that): the unit of one reduce."""
        buckets, size = [[]], 0
        for name, p in self.named:
            if buckets[-1] and size + p.numel() > BUCKET_NUMEL:
                buckets.append([])
                size = 0
            buckets[-1].append((name, p))
            size += p.numel()
        return [b for b in buckets if b]

    def _gather_kind(self, key: str | None, dst: int) -> dict[str, torch.Tensor]:
        """Full fp32 tensors of one kind (weights: None, or a moment) on rank `dst`, {} elsewhere.

        Partitioned: each bucket is a flat fp32 buffer of its parameters, every rank fills in its fragments
        (disjoint) and one reduce sums them on `dst`, the only rank that copies to the host."""
        out, is_dst = {}, dist.get_rank() == dst
        if not self.partitioned:  # every rank holds the full tensors: only `dst` copies them
            if is_dst:
                for name, p in self.named:
                    src = self._source(p, key)
                    out[name] = (src if src is not None else torch.zeros_like(p)).detach().float().cpu().clone()
            return out
        device = torch.device(self.engine.device)  # where the flat fp32 partitions live
        for bucket in self._buckets():
            buf = torch.zeros(sum(p.numel() for _, p in bucket), dtype=torch.float32, device=device)
            offset = 0
            for _, p in bucket:
                src = self._source(p, key)
                if src is not None:
                    lp = p._hp_mapping.lp_fragment_address
                    buf.narrow(0, offset + lp.start, lp.numel).copy_(src)
                offset += p.numel()
            dist.reduce(buf, dst=dst)
            if is_dst:  # one copy per tensor, each owning its memory (safetensors refuses views of one buffer)
                for (name, p), t in zip(bucket, buf.split([q.numel() for _, q in bucket])):
                    out[name] = t.view(p.shape).to("cpu", copy=True)
        return out

    # ------------------------------------------------------------------ public
    def gather(self, dst: int = 0) -> FullState:
        """Collective: every rank calls it; rank `dst` gets the tensors, the others an empty FullState."""
        weights = self._gather_kind(None, dst)
        moments = {k: self._gather_kind(k, dst) for k in MOMENTS}
        out = FullState(weights, moments, self.adam_step())
        scaler = getattr(self.engine.optimizer, "loss_scaler", None)
        out.loss_scaler = {f: getattr(scaler, f) for f in LOSS_SCALER_FIELDS if hasattr(scaler, f)}
        return out

    def adam_step(self) -> int:
        for state in self.adam.state.values():
            if "step" in state:
                return int(state["step"])
        return 0

    def scatter(self, state: FullState) -> None:
        """Collective: load full tensors (same on every rank) into this engine's partitions."""
        with torch.no_grad():
            self._ensure_adam_state(state.adam_step)
            for name, p in self.named:
                for key, full in [(None, state.weights[name])] + [(k, state.moments[k][name]) for k in MOMENTS]:
                    dst = self._source(p, key)
                    if dst is None:
                        continue
                    if self.partitioned:
                        lp = p._hp_mapping.lp_fragment_address
                        dst.copy_(full.reshape(-1).narrow(0, lp.start, lp.numel))
                    else:
                        dst.copy_(full.view_as(dst))
            if self.partitioned:  # the model's bf16/fp16/fp32 working copies from the fp32 masters
                self.engine.optimizer.update_lp_params()
        scaler = getattr(self.engine.optimizer, "loss_scaler", None)
        for f, v in state.loss_scaler.items():
            if scaler is not None and hasattr(scaler, f):
                setattr(scaler, f, v)

    def _ensure_adam_state(self, step: int) -> None:
        """AdamW state exists only after a first step: create it (zeros, then filled by scatter) as
        torch.optim.AdamW would, with its step count."""
        for group in self.adam.param_groups:
            for q in group["params"]:
                state = self.adam.state[q]
                for k in MOMENTS:
                    state.setdefault(k, torch.zeros_like(q, memory_format=torch.preserve_format))
                fused = group.get("fused") or group.get("capturable")
                state["step"] = (torch.tensor(float(step), dtype=torch.float32, device=q.device) if fused
                                 else torch.tensor(float(step), dtype=torch.float32))


def digest(state: FullState) -> dict:
    """Sum of |x| per kind over all tensors (float64, in name and index order) and the AdamW step: a
    fingerprint of a state, equal when the tensors are (e.g. a checkpoint file and what an engine loaded from
    it), in any process."""
    def total(tensors: dict[str, torch.Tensor]) -> float:
        # cumsum adds in index order; sum() groups by thread, so processes with other thread counts would differ
        return sum(float(t.cumsum(0)[-1]) if (t := tensors[n].detach().reshape(-1).double().abs()).numel() else 0.0
                   for n in sorted(tensors))

    return {"weights": total(state.weights), **{k: total(state.moments.get(k, {})) for k in MOMENTS},
            "adam_step": state.adam_step}
