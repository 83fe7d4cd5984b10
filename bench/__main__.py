"""``python -m bench <name> [options]``: run one bench; ``--help`` after a name for its options.

Each name maps to a module with ``main(argv) -> int`` (imported only when chosen).
"""

from __future__ import annotations

import importlib
import sys

BENCHES = {
    "bare": "bench.bare",  # bare limits of the stack: Redis, WebSocket relay, bare pipeline
    "core": "bench.core",  # the routing core driven in-process, next to raw EVALSHA
    "e2e": "bench.e2e",  # a real server end to end over real sockets, next to the bare limits
    "all": "bench.all",  # what `make bench` runs: core, then e2e with --step and 10k consoles
    "cost": "bench.cost",  # Redis's instructions per routed case under callgrind (noise-proof)
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in BENCHES:
        print(f"usage: python -m bench {{{','.join(BENCHES)}}} [options]", file=sys.stderr)
        return 2
    module = importlib.import_module(BENCHES[argv[0]])
    code: int = module.main(argv[1:])
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
