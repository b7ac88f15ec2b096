"""Ids in OpenAI's style: ``sess_...``, ``item_...``, ``resp_...``, ``event_...``.

Its own module so that both the event builders and the protocol's tables can use
it without importing each other in a circle. Standard library only.
"""

from __future__ import annotations

import itertools
import os

_counter = itertools.count()


def new_id(prefix: str) -> str:
    """A unique id: random bytes (unguessable across restarts) plus a counter (unique
    within one process)."""
    return f"{prefix}_{os.urandom(6).hex()}{next(_counter):04x}"
