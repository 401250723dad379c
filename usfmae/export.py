"""Weights readable without DeepSpeed: a run's MAE in fp32, or its encoder as a timm VisionTransformer
(`usfmae export`, usfmae/commands/export.py)."""

from pathlib import Path

import torch
import yaml

from .checkpoint import CheckpointError, ExportMeta, load_state_dict, mae_to_timm, save_safetensors
from .config import ModelConfig
from .model import create_model
from .model.timm_vit import timm_vit_like


def _locate(path: Path) -> tuple[Path, dict | None]:
    """(what to read, the run's resolved config if one is found beside it)."""
    run_dir = path if path.is_dir() else path.parent
    if path.is_dir() and (path / "checkpoints" / "latest").is_file():
        path = path / "checkpoints"
    for candidate in (run_dir, run_dir.parent):
        if (candidate / "config.yaml").is_file():
            return path, yaml.safe_load((candidate / "config.yaml").read_text())
    return path, None


def model_spec(path: Path, config: dict | None, preset: str | None) -> tuple[str, dict]:
    """(preset, overrides): from --preset, the run's config, the file's metadata, else ViT-B/16."""
    if preset:
        return preset, {}
    if config:
        model = ModelConfig.model_validate(config.get("model") or {})  # the run's own schema, not a key list
        return model.preset, model.overrides()
    meta = ExportMeta.read(path)
    if meta is not None:
        return meta.preset, meta.model_overrides
    return "mae_vit_base_patch16", {}


def export(checkpoint: str | Path, fmt: str, out: str | Path, preset: str | None = None) -> Path:
    """Write `checkpoint` as `fmt` ('mae' or 'timm') to `out`, after checking it loads strictly."""
    src, config = _locate(Path(checkpoint))
    name, overrides = model_spec(src, config, preset)
    state = load_state_dict(src)
    mae = create_model(name, **overrides)
    missing, unexpected = mae.load_state_dict(state, strict=False)
    if missing:
        raise CheckpointError(f"{checkpoint} does not hold a full {name} MAE: missing {', '.join(missing)}")
    if fmt == "timm":
        state = mae_to_timm(state)
        timm_vit_like(mae).load_state_dict(state, strict=True)  # the export must load into timm as is
    else:
        state = {k: v for k, v in state.items() if k not in unexpected}
    out = Path(out)
    if out.suffix in (".pt", ".pth"):
        out.parent.mkdir(parents=True, exist_ok=True)
        torch.save({k: v.float().contiguous() for k, v in state.items()}, out)
    else:
        save_safetensors(state, out, ExportMeta(name, overrides, format=f"usfmae-{fmt}").metadata())
    return out

