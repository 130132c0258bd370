"""`python -m edgepipe` runs the command line."""

from edgepipe.cli import main

raise SystemExit(main())
