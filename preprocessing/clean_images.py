"""Clean a folder of inputs for QA before a big build (see --help).

The body is usfmae/commands/clean_images.py (also `usfmae clean`); this script runs it from a checkout
(python preprocessing/clean_images.py ...).
"""

import sys

from usfmae.commands.clean_images import main

if __name__ == "__main__":
    sys.exit(main())
