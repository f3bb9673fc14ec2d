"""`python -m lbtrain` is the `lbtrain` command."""

from lbtrain.cli import main

raise SystemExit(main())
