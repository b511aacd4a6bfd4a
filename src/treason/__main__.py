"""``python -m treason`` is the ``treason`` command."""

from treason.cli import main

raise SystemExit(main())
