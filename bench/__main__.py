"""bench.__main__ — ``python -m bench``: see bench.main."""

from bench.main import main

raise SystemExit(main())
