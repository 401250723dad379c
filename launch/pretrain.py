"""Pretrain USF-MAE with DeepSpeed (see --help).

The body is usfmae/commands/pretrain.py (also `usfmae pretrain`); this script is the path the
DeepSpeed launcher runs from a checkout (deepspeed launch/pretrain.py ..., python launch/pretrain.py --dry-run ...).
"""

import sys

from usfmae.commands.pretrain import main

if __name__ == "__main__":
    sys.exit(main())
