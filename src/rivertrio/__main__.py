"""``python -m rivertrio``: the same as the ``rivertrio`` command."""

from __future__ import annotations

from ._cli import main

if __name__ == "__main__":
    main()
