"""``python -m bench all`` (what ``make bench`` runs): the core bench, then the full e2e bench.

The e2e run steps the rate to find the knee, opens 10,000 idle consoles, measures the bare
limits in the same run and copies its summary and plots to ``docs/bench/``. Options after
``all`` go to the e2e bench (``python -m bench e2e --help``). Exit status: the worst of the two.
"""

from __future__ import annotations

import sys

E2E_DEFAULTS = ["--step", "--idle-conns", "10000", "--publish", "docs/bench"]


def main(argv: list[str] | None = None) -> int:
    from bench import core, e2e

    print("bench all: core", file=sys.stderr, flush=True)
    code = core.main([])
    print("bench all: e2e", file=sys.stderr, flush=True)
    return max(code, e2e.main([*E2E_DEFAULTS, *(argv or [])]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
