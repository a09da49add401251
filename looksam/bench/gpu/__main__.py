"""``python -m looksam.bench.gpu``."""

from __future__ import annotations

import sys

from looksam.bench.gpu.cli import main

sys.exit(main())
