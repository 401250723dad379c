"""`usfmae export`: write weights readable without DeepSpeed.

    python -m usfmae.commands.export --checkpoint runs/usfmae --format mae  --out usfmae_mae.safetensors
    python -m usfmae.commands.export --checkpoint runs/usfmae --format timm --out usfmae_vitb16_timm.safetensors

--checkpoint: a run directory, its checkpoints/ directory (DeepSpeed ZeRO, consolidated to fp32), or any
weights file usfmae reads. 'mae' writes the full MAE in fp32 safetensors (for continual pretraining);
'timm' writes the encoder as a timm VisionTransformer state dict (for ViT-B/16: timm's
vit_base_patch16_224, loadable with strict=True and num_classes=0). .pth/.pt outputs are torch.save'd.
"""

import argparse
import sys

from usfmae.checkpoint import CheckpointError
from usfmae.export import export


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True, help="run dir, DeepSpeed checkpoint dir, or weights file")
    ap.add_argument("--format", choices=["mae", "timm"], required=True, help="what to write")
    ap.add_argument("--out", required=True, help="output file (.safetensors, or .pth/.pt)")
    ap.add_argument("--preset", help="MAE preset when the checkpoint does not record it")
    args = ap.parse_args(argv)
    try:
        out = export(args.checkpoint, args.format, args.out, args.preset)
    except (CheckpointError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
