from __future__ import annotations

from mer_bench.cli import main

raise SystemExit(main())
