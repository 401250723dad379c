"""Fine-tune a pretrained USF-MAE encoder or a baseline (see --help).

The body is usfmae/commands/finetune.py (also `usfmae finetune`); this script stays so the README's commands on this
path keep working (python launch/finetune.py ..., torchrun/deepspeed launch/finetune.py ...).
"""

import sys

from usfmae.commands.finetune import main

if __name__ == "__main__":
    sys.exit(main())
