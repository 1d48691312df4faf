"""Matching a response against a Piranha ``expect`` string (pure).

Three forms, as in Piranha's nanny:

- ``"*"``: any response of at least one byte;
- a literal: the response must *start with* it (nanny compared the first ``len(expect)``
  bytes with ``strncmp``);
- with ``use_regex``: a regular expression searched anywhere in what was read so far.

Text is matched as UTF-8 bytes. At most :data:`MAX_READ` bytes are ever considered.
"""

from __future__ import annotations

import re

MAX_READ = 65536  # bytes read at most from a response before giving up


class Expect:
    """A compiled expect string. Raises :class:`re.error` for a bad regex."""

    __slots__ = ("_any", "_literal", "_regex", "text")

    def __init__(self, text: str, regex: bool = False) -> None:
        self.text = text
        self._any = text == "*" and not regex
        self._literal = text.encode("utf-8")
        self._regex = re.compile(self._literal) if regex else None

    def judge(self, buf: bytes, eof: bool = False) -> bool | None:
        """True when ``buf`` matches, False when it never can, None when more data may help."""
        if self._any:
            return True if buf else (False if eof else None)
        if self._regex is not None:
            if self._regex.search(buf):
                return True
            return False if eof or len(buf) >= MAX_READ else None
        want = self._literal
        if len(buf) >= len(want):
            return buf.startswith(want)
        if not want.startswith(buf):
            return False  # diverged already: no need to wait for more
        return False if eof else None

    def __repr__(self) -> str:
        kind = "regex" if self._regex is not None else "literal"
        return f"Expect({self.text!r}, {kind})"
