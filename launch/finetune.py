"""Fine-tune a pretrained USF-MAE encoder or a baseline (see --help).

The body is usfmae/commands/finetune.py (also `usfmae finetune`); this script is the path
torchrun and the DeepSpeed launcher run from a checkout (python launch/finetune.py ..., torchrun/deepspeed
launch/finetune.py ...).
"""

import sys

from usfmae.commands.finetune import main

if __name__ == "__main__":
    sys.exit(main())
