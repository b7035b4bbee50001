"""`python -m milpverify`: the command-line interface (see `milpverify.cli`)."""

from milpverify.cli import main

raise SystemExit(main())
