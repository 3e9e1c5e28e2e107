"""``python -m stanch``: the same as the ``stanch`` console script."""

from stanch.cli import main

main()
