"""`python -m looksam` is the `looksam-bench` command (handy where scripts are not on PATH)."""

from __future__ import annotations

from looksam.cli.app import main

if __name__ == "__main__":
    main()
