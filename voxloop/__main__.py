"""``python -m voxloop`` is the same as the ``voxloop`` command."""

from voxloop.cli import main

raise SystemExit(main())
