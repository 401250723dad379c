"""Build WebDataset shards on a Ray cluster (see --help).

The body is usfmae/commands/build_shards.py (also `usfmae build-shards`); this script is the path a Ray job
runs from a checkout (python preprocessing/build_shards.py ..., ray job submit ... -- python
preprocessing/build_shards.py ...).
"""

import sys

from usfmae.commands.build_shards import main

if __name__ == "__main__":
    sys.exit(main())
