"""Ids for what the router creates: cases, customers, timeline entries, messages.

``new_id(tag)`` is time-ordered and unguessable: tag + ms timestamp + a per-process counter + 48
random bits. Ids made by one process sort in creation order even within a millisecond, which is
what keeps FIFO exact for cases of equal priority and age.
"""

from __future__ import annotations

import itertools
import os
import time

__all__ = ["new_id"]

_seq = itertools.count()


class _Entropy:
    """Random bits for ids from the OS's CSPRNG, 3 KiB at a time: ``secrets.token_hex`` is a
    getrandom syscall per id (four per routed case, 2 % of a router's CPU). A forked child
    starts afresh, so no two processes share bits."""

    __slots__ = ("at", "pool")

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.pool, self.at = b"", 0

    def hex6(self) -> str:
        i = self.at
        if i + 6 > len(self.pool):
            self.pool, i = os.urandom(3072), 0
        self.at = i + 6
        return self.pool[i : i + 6].hex()


_entropy = _Entropy()
os.register_at_fork(after_in_child=_entropy.reset)


def new_id(tag: str) -> str:
    """``tag`` + ms timestamp (hex) + a 16-bit counter + 48 random bits (hex)."""
    return f"{tag}{int(time.time() * 1000):x}{next(_seq) & 0xFFFF:04x}{_entropy.hex6()}"
