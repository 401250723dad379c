"""Every checkpoint conversion in one place.

Formats read: our fp32 safetensors export, our training checkpoints (below), a released USF-MAE state dict
(.pt/.pth, plain or under 'model'), an MAE ImageNet checkpoint ({'model': ...}), a DeepSpeed ZeRO checkpoint
directory (consolidated to fp32), and a timm ViT state dict (encoder only). Formats written: full MAE
safetensors, timm ViT encoder, and training checkpoints.
Pickles are never executed: torch.load(weights_only=True) or safetensors only.

Training checkpoint (`checkpoints/<tag>/`, world-size independent: nothing in it depends on how many ranks
wrote it, so a run resumes on any number of GPUs):
    model.safetensors      every tensor of the model's state dict, fp32 (the same format as the export)
    optimizer.safetensors  AdamW moments as 'exp_avg/<name>' and 'exp_avg_sq/<name>', fp32
    state.json             step, AdamW step count, fp16 loss scale, data position, batch plan, config
and `checkpoints/latest` naming the newest complete one (a tag directory appears only once complete).
"""

import hashlib
import json
import math
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

from timm.layers import resample_abs_pos_embed
from timm.models import adapt_input_conv

ENCODER_PREFIXES = ("cls_token", "pos_embed", "patch_embed.", "blocks.", "norm.")


@dataclass
class LoadReport:
    """What loading a weights file did to a model: every key accounted for."""

    source: str
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)  # tensors resampled or re-channelled to fit
    reinitialised: list[str] = field(default_factory=list)  # head tensors of another shape, left fresh
    loaded: int = 0  # tensors copied into the model

    def __str__(self) -> str:
        lines = [f"loaded {self.source}: {self.loaded} tensors, {len(self.missing)} missing, "
                 f"{len(self.unexpected)} unexpected keys"]
        for title, keys in (("missing", self.missing), ("unexpected", self.unexpected), ("adapted", self.adapted),
                            ("reinitialised", self.reinitialised)):
            if keys:
                lines.append(f"  {title}: " + ", ".join(keys))
        return "\n".join(lines)


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit; the message names the file."""


class CheckpointNotFound(CheckpointError, FileNotFoundError):
    """No file or directory at the checkpoint path (both a CheckpointError and a FileNotFoundError)."""


# ---------------------------------------------------------------------------- reading
# Wrappers that prefix parameter names: DDP/DeepSpeed ("module.") and torch.compile ("_orig_mod.").
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def plain_name(key: str) -> str:
    """A parameter name without the prefixes DDP, DeepSpeed or torch.compile put in front of it."""
    while key.startswith(WRAPPER_PREFIXES):
        key = key.split(".", 1)[1]
    return key


def strip_wrappers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict under plain parameter names (plain_name)."""
    return {plain_name(k): v for k, v in state.items()}


def _unwrap(obj, path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a loaded file, taken out of {'model' | 'state_dict' | 'module': ...} wrappers."""
    for key in ("model", "state_dict", "module"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not obj or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors")
    return strip_wrappers(obj)


def load_deepspeed(ckpt_dir: str | Path, tag: str | None = None) -> dict[str, torch.Tensor]:
    """Consolidate a DeepSpeed ZeRO checkpoint directory (with a 'latest' file or a tag) to fp32."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    ckpt_dir = Path(ckpt_dir)
    if tag is None and not (ckpt_dir / "latest").is_file():
        raise CheckpointError(f"{ckpt_dir} has no 'latest' file: not a DeepSpeed checkpoint directory")
    state = get_fp32_state_dict_from_zero_checkpoint(str(ckpt_dir), tag=tag)
    return {k: v.float().contiguous() for k, v in strip_wrappers(state).items()}


def fetch_checkpoint(ref: str | Path, endpoint_url: str | None = None) -> Path:
    """A local path for checkpoint `ref`: itself, or for an s3:// URL the weights downloaded into a local cache.

    On S3: a weights object (.safetensors, .pt, .pth), or a run's training checkpoint: one tag folder, the
    checkpoints/ folder or the run directory (the tag `latest` names), of which model.safetensors is fetched.
    """
    if not str(ref).startswith("s3://"):
        return Path(ref)
    from .runstore import CHECKPOINTS, RunStore
    from .shards.config import S3Config

    url = str(ref).rstrip("/")
    cache = Path(tempfile.gettempdir()) / "usfmae-checkpoints" / hashlib.sha1(url.encode()).hexdigest()[:12]
    if Path(url).suffix in (".safetensors", ".pt", ".pth"):
        folder, name = url.rsplit("/", 1)
        store, candidates = RunStore(folder, cache, S3Config(endpoint_url=endpoint_url)), [name]
    else:
        store = RunStore(url, cache, S3Config(endpoint_url=endpoint_url))
        candidates = [RUN_WEIGHTS]
        for folder in ("", f"{CHECKPOINTS}/"):  # `url` is a checkpoints/ folder, or the run directory
            tag = store.read_text(f"{folder}{LATEST}")
            if tag is not None:
                candidates.insert(0, f"{folder}{tag.strip()}/{RUN_WEIGHTS}")
    for name in candidates:
        if store.sink.get_file(name, store.local(name)):
            return store.local(name)
    raise CheckpointNotFound(f"checkpoint not found: {url} (no {' or '.join(store.where(c) for c in candidates)})")


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read any supported checkpoint (a local path or an s3:// URL, see fetch_checkpoint) into a flat
    {name: tensor} dict (CPU)."""
    path = fetch_checkpoint(path)
    if not path.exists():
        raise CheckpointNotFound(f"checkpoint not found: {path}")
    if path.is_dir():
        ours = run_checkpoint_dir(path)
        return load_file(str(ours / RUN_WEIGHTS), device="cpu") if ours else load_deepspeed(path)
    try:
        if path.suffix == ".safetensors":
            return strip_wrappers(load_file(str(path), device="cpu"))
        return _unwrap(torch.load(path, map_location="cpu", weights_only=True), path)
    except CheckpointError:
        raise
    except Exception as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {type(e).__name__}: {e}") from None


# ---------------------------------------------------------------------------- adapting
def adapt_state_dict(state: dict[str, torch.Tensor], target: dict[str, torch.Tensor],
                     report: LoadReport) -> dict[str, torch.Tensor]:
    """Fit position embeddings (grid) and patch embedding (input channels) to the target's shapes, with
    timm's own conversions (resample_abs_pos_embed, adapt_input_conv)."""
    out = dict(state)
    for key in ("pos_embed", "decoder_pos_embed"):
        if key in out and key in target and out[key].shape != target[key].shape:
            # [1, 1 + G*G, D] -> [1, 1 + G'*G', D]: the grid resampled bicubically, the cls row kept.
            side = math.isqrt(target[key].shape[1] - 1)
            out[key] = resample_abs_pos_embed(out[key], new_size=[side, side], num_prefix_tokens=1,
                                              interpolation="bicubic", antialias=False)
            report.adapted.append(f"{key} {list(state[key].shape)}->{list(out[key].shape)}")
    key = "patch_embed.proj.weight"
    if key in out and key in target and out[key].shape[1] != target[key].shape[1]:
        w, c = out[key], target[key].shape[1]
        # [D, C, P, P] -> [D, c, P, P]: summed to 1 channel, or repeated and rescaled to c channels.
        out[key] = adapt_input_conv(c, w, base_chans=w.shape[1])
        report.adapted.append(f"{key} in_chans {w.shape[1]}->{c}")
    return out


def load_into(model: nn.Module, path: str | Path, strict: bool = False, prefixes: tuple[str, ...] | None = None,
              verbose: bool = True) -> LoadReport:
    """Load weights from any supported format into `model`, reporting missing and unexpected keys.

    `prefixes` limits what is loaded (e.g. ENCODER_PREFIXES for a classifier from an MAE checkpoint).
    Tensors whose shapes still differ after adaptation are reported as unexpected and not loaded.
    """
    report = LoadReport(str(path))
    state = load_state_dict(path)
    if prefixes is not None:
        state = {k: v for k, v in state.items() if k.startswith(prefixes)}
    target = model.state_dict()
    state = adapt_state_dict(state, target, report)
    shape_mismatch = [k for k, v in state.items() if k in target and v.shape != target[k].shape]
    for k in shape_mismatch:
        report.unexpected.append(f"{k} (shape {list(state.pop(k).shape)} vs {list(target[k].shape)})")
    result = model.load_state_dict(state, strict=False)
    report.missing = list(result.missing_keys)
    report.unexpected += list(result.unexpected_keys)
    report.loaded = len(state) - len(result.unexpected_keys)
    if strict and (report.missing or report.unexpected):
        raise CheckpointError(str(report))
    if verbose:
        print(report, flush=True)
    return report


# ---------------------------------------------------------------------------- writing
def mae_to_timm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Encoder of an MAE state dict under timm VisionTransformer names (they coincide)."""
    return {k: v for k, v in state.items() if k.startswith(ENCODER_PREFIXES)}


def save_safetensors(state: dict[str, torch.Tensor], path: str | Path, metadata: dict | None = None) -> Path:
    """fp32, contiguous, atomically written (temp file then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # safetensors copies the bytes out while writing: no clone (a clone doubles a checkpoint's host memory)
    tensors = {k: v.detach().float().contiguous().cpu() for k, v in state.items()}
    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    tmp.replace(path)
    return path


def read_metadata(path: str | Path) -> dict[str, str]:
    """The string metadata stored in a safetensors file header."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


@dataclass(frozen=True)
class ExportMeta:
    """What our MAE safetensors (export, training checkpoint) record about the model, enough to rebuild it
    as create_model(preset, **model_overrides). The one writer (metadata) and reader (read) of that header."""

    preset: str
    model_overrides: dict = field(default_factory=dict)  # constructor kwargs that differ from the preset
    format: str = "usfmae-mae"  # usfmae-mae (full MAE) or usfmae-timm (encoder under timm names)
    step: int | None = None  # optimizer step of a pretraining run, when known

    def metadata(self) -> dict:
        """The safetensors header (save_safetensors JSON-encodes the non-string values)."""
        meta = {"format": self.format, "preset": self.preset, "model_overrides": self.model_overrides}
        return meta if self.step is None else {**meta, "step": self.step}

    @classmethod
    def read(cls, path: str | Path) -> "ExportMeta | None":
        """The metadata of a safetensors file of ours; None for other files or headers without a preset."""
        path = fetch_checkpoint(path)
        if path.suffix != ".safetensors" or not path.is_file():
            return None
        meta = read_metadata(path)
        if "preset" not in meta:
            return None
        step = meta.get("step")
        return cls(meta["preset"], json.loads(meta.get("model_overrides", "{}")), meta.get("format", "usfmae-mae"),
                   None if step is None else int(step))


# ---------------------------------------------------------------------------- training checkpoints
RUN_WEIGHTS, RUN_OPTIMIZER, RUN_STATE, LATEST = "model.safetensors", "optimizer.safetensors", "state.json", "latest"


def run_checkpoint_dir(path: str | Path) -> Path | None:
    """Our training checkpoint at `path` (a tag directory, or a checkpoints/ directory with 'latest'), or None."""
    path = Path(path)
    if (path / LATEST).is_file():
        path = path / (path / LATEST).read_text().strip()
    return path if (path / RUN_STATE).is_file() else None


def stage_run_checkpoint(staged: str | Path, weights: dict[str, torch.Tensor],
                         moments: dict[str, dict[str, torch.Tensor]], state: dict, metadata: dict) -> Path:
    """Write the files of a training checkpoint into the (fresh) directory `staged`, state.json last."""
    staged = Path(staged)
    shutil.rmtree(staged, ignore_errors=True)
    save_safetensors(weights, staged / RUN_WEIGHTS, metadata)
    save_safetensors({f"{k}/{n}": t for k, ts in moments.items() for n, t in ts.items()}, staged / RUN_OPTIMIZER)
    (staged / RUN_STATE).write_text(json.dumps(state, indent=1))
    return staged


def write_run_checkpoint(ckpt_dir: str | Path, tag: str, weights: dict[str, torch.Tensor],
                         moments: dict[str, dict[str, torch.Tensor]], state: dict, metadata: dict) -> str:
    """Write <ckpt_dir>/<tag>/ (a local folder or s3:// URL) and point 'latest' at it, atomically
    (usfmae.runstore: a kill never leaves a half-written tag or 'latest'); returns the tag's address."""
    from .runstore import CHECKPOINTS, RunStore

    ckpt_dir = str(ckpt_dir).rstrip("/")
    if not ckpt_dir.endswith(CHECKPOINTS):
        raise ValueError(f"{ckpt_dir}: training checkpoints live in a run directory's '{CHECKPOINTS}' folder")
    store = RunStore(ckpt_dir[:-len(CHECKPOINTS)].rstrip("/") or ".")
    stage_run_checkpoint(store.checkpoint_staging(tag), weights, moments, state, metadata)
    return store.publish_checkpoint(tag)


def read_run_checkpoint(path: str | Path) -> tuple[dict, dict[str, torch.Tensor], dict[str, dict[str, torch.Tensor]]]:
    """(state.json, fp32 weights, {moment: {name: tensor}}) of a training checkpoint directory."""
    path = Path(path)
    try:
        state = json.loads((path / RUN_STATE).read_text())
        weights = load_file(str(path / RUN_WEIGHTS), device="cpu")
        moments: dict[str, dict[str, torch.Tensor]] = {}
        for key, t in load_file(str(path / RUN_OPTIMIZER), device="cpu").items():
            kind, name = key.split("/", 1)
            moments.setdefault(kind, {})[name] = t
    except Exception as e:  # noqa: BLE001 - OSError, JSON and safetensors errors alike: name the checkpoint
        raise CheckpointError(f"cannot read training checkpoint {path}: {type(e).__name__}: {e}") from None
    return state, weights, moments
