"""`python -m scripts.bench.peers ...`: the same as `apg bench peers ...` (command.py)."""

import sys

from scripts.bench.peers.command import main

sys.exit(main())
