"""`python -m eventbus` is the `eventbus` command."""

from eventbus.cli import main

raise SystemExit(main())
