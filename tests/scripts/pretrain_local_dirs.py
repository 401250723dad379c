"""launch/pretrain.py with every rank given its own --output (<output>/rank<RANK>), as node-local disks would.

Run under the real deepspeed launcher by tests/e2e/test_elastic.py: the shared-run-directory guard must stop it.
"""

import os
import runpy
import sys
from pathlib import Path

i = sys.argv.index("--output")
sys.argv[i + 1] = str(Path(sys.argv[i + 1]) / f"rank{os.environ['RANK']}")
sys.argv[0] = str(Path(__file__).resolve().parents[2] / "launch" / "pretrain.py")
runpy.run_path(sys.argv[0], run_name="__main__")
