"""config.locate — find the line a TOML key or table header is on.

SYNOPSIS
    lines = KeyLines(text)
    lines.find(("limits", "max_recipients"))          # -> 12, or None
    lines.find(("listener", "port"), index=1)         # second [[listener]]
    lines.find(("routing", "catch_all", "example.com"))

DESCRIPTION
    tomllib returns values without positions, so error messages get their line
    numbers from a light scan of the text: table headers ``[a.b]``, array-of-tables
    headers ``[[a]]`` (counted, so the Nth one is known), and ``key =`` lines,
    including dotted and quoted keys. Lines inside multi-line strings are skipped.
    It is good enough for pointing a person at a line, not a TOML parser: when a
    key is not found, ``find`` falls back to the nearest enclosing table's header
    (or its key), and finally None.
"""

from __future__ import annotations

import json
import re

_KEY_PART = r'(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|\'[^\']*\')'
_DOTTED = rf"{_KEY_PART}(?:\s*\.\s*{_KEY_PART})*"
_ARRAY_HEADER = re.compile(rf"\s*\[\[\s*({_DOTTED})\s*\]\]\s*(?:#.*)?")
_TABLE_HEADER = re.compile(rf"\s*\[\s*({_DOTTED})\s*\]\s*(?:#.*)?")
_KEY_LINE = re.compile(rf"\s*({_DOTTED})\s*=")
_PART = re.compile(_KEY_PART)

Path_ = tuple[str, ...]


def split_key(dotted: str) -> Path_:
    """``a."b.c".d`` -> ("a", "b.c", "d")."""
    parts: list[str] = []
    for token in _PART.findall(dotted):
        if token.startswith('"'):
            parts.append(str(json.loads(token)))
        elif token.startswith("'"):
            parts.append(token[1:-1])
        else:
            parts.append(token)
    return tuple(parts)


class KeyLines:
    """Line numbers (1-based) of every header and ``key =`` in a TOML text.

    Entries are keyed by (full key path, array index): the index is the position of
    the enclosing ``[[array]]`` table, or -1 outside any array table.
    """

    def __init__(self, text: str) -> None:
        self._lines: dict[tuple[Path_, int], int] = {}
        table: Path_ = ()
        index = -1
        array_counts: dict[Path_, int] = {}
        in_string: str | None = None
        for number, line in enumerate(text.splitlines(), start=1):
            if in_string is not None:
                if line.count(in_string) % 2 == 1:
                    in_string = None
                continue
            if m := _ARRAY_HEADER.fullmatch(line):
                table = split_key(m.group(1))
                index = array_counts.get(table, -1) + 1
                array_counts[table] = index
                self._lines.setdefault((table, index), number)
            elif m := _TABLE_HEADER.fullmatch(line):
                table = split_key(m.group(1))
                # A sub-table of an array table ([listener.x]) stays in that element.
                if not any(table[: len(a)] == a for a in array_counts):
                    index = -1
                self._lines.setdefault((table, index), number)
            elif m := _KEY_LINE.match(line):
                self._lines.setdefault((table + split_key(m.group(1)), index), number)
                rest = line[m.end() :]
                for quote in ('"""', "'''"):
                    if rest.count(quote) % 2 == 1:
                        in_string = quote
                        break

    def find(self, key: Path_, index: int = -1) -> int | None:
        """The line of ``key`` (in the ``index``-th array table), else of the nearest
        enclosing table or key, else None."""
        for length in range(len(key), 0, -1):
            prefix = key[:length]
            for candidate in dict.fromkeys((index, -1)):
                if (prefix, candidate) in self._lines:
                    return self._lines[(prefix, candidate)]
        return None
