"""queue.ids — queue identifiers.

SYNOPSIS
    ids = QueueIdGenerator()
    queue_id = ids.new()            # e.g. "01JD3K7QZP4XM0A2"

DESCRIPTION
    A queue id names one message everywhere: the 250 reply, Received headers, log
    lines, the status log, file names. It is 16 characters of Crockford base32
    (digits and upper-case letters without I, L, O, U), so it is safe in file names,
    header comments and URLs, and ASCII order is time order:

        9 chars   milliseconds since the Unix epoch (45 bits, good until year 3084)
        3 chars   a random node tag chosen when the generator is made (15 bits)
        4 chars   a per-generator counter with a random start (20 bits)

    Within one generator two ids differ unless more than 2**20 ids are made in the
    same millisecond. Across nodes (several postgate processes sharing one MariaDB
    or PostgreSQL queue) ids collide only when two generators drew the same node
    tag *and* the same counter value in the same millisecond.

SEE ALSO
    queue.sqlite (which stores the id as the primary key)
"""

from __future__ import annotations

import itertools
import secrets
import time
from collections.abc import Callable

# Crockford's base32: no I, L, O or U, so ids survive being read aloud or retyped.
_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_TIME_CHARS = 9
_NODE_CHARS = 3
_COUNTER_CHARS = 4
_COUNTER_MASK = (1 << (5 * _COUNTER_CHARS)) - 1
QUEUE_ID_LENGTH = _TIME_CHARS + _NODE_CHARS + _COUNTER_CHARS


def _encode(value: int, width: int) -> str:
    chars = []
    for _ in range(width):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def is_queue_id(text: str) -> bool:
    """True when ``text`` has the shape of a queue id (used to validate CLI input)."""
    return len(text) == QUEUE_ID_LENGTH and all(c in _ALPHABET for c in text)


def queue_id_time(queue_id: str) -> float:
    """The creation time (unix seconds) encoded in a queue id."""
    millis = 0
    for char in queue_id[:_TIME_CHARS]:
        millis = (millis << 5) | _ALPHABET.index(char)
    return millis / 1000.0


class QueueIdGenerator:
    """Makes queue ids. One per store; cheap enough for the enqueue hot path."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._node = _encode(secrets.randbits(5 * _NODE_CHARS), _NODE_CHARS)
        # itertools.count.__next__ is atomic under the GIL, so concurrent callers on
        # several threads still get distinct counter values.
        self._counter = itertools.count(secrets.randbits(5 * _COUNTER_CHARS))

    def new(self) -> str:
        millis = int(self._clock() * 1000)
        sequence = next(self._counter) & _COUNTER_MASK
        return _encode(millis, _TIME_CHARS) + self._node + _encode(sequence, _COUNTER_CHARS)
