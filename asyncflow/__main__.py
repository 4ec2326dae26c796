"""`python -m asyncflow`: the same command as the `asyncflow` console script."""

from asyncflow.cli import main

raise SystemExit(main())
