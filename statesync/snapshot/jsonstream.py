"""One JSON object read from text that arrives in pieces, one of its arrays an element at a time. Pure.

A manifest is a JSON object whose entry list may be tens of megabytes: parsed whole, its text,
its decoded string and the tree of dicts json.loads builds all live at once, several times
the memory of the entries a restore keeps. Here each element of the array under ``list_key``
is parsed on its own (``jsonload.raw_decode``: json's, with statesync's nesting bound) as soon
as its text is complete and handed on, so that memory holds the text of about one element,
never the document's.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable

from ..errors import StreamError
from ..jsonload import TooDeep, raw_decode

_NONBLANK = re.compile(r"[^ \t\n\r]")


class ObjectStream:
    """Feed the text of a JSON object with ``feed``; each element of the array under
    ``list_key`` goes to ``on_item`` as soon as it is complete, every other member (and a
    ``list_key`` whose value is no array) to ``on_member(key, value)``. ``close`` checks the
    object ended. Any one value (an element, another member's value) may have at most
    ``max_value`` characters of text. Raises StreamError."""

    def __init__(self, list_key: str, on_item: Callable[[object], None],
                 on_member: Callable[[str, object], None], max_value: int):
        self._list_key, self._on_item, self._on_member = list_key, on_item, on_member
        self._max = max_value
        self._buf, self._pos = "", 0
        self._more: list[str] = []
        self._more_len = 0
        self._want = 1  # characters of unparsed text wanted before trying again
        self._state = "start"
        self._key = ""
        self._keys: set[str] = set()
        self.saw_list = False  # ``list_key`` held an array

    def feed(self, text: str) -> None:
        if text:
            self._more.append(text)
            self._more_len += len(text)
        # Parse again only once the pending text has grown enough: a large element is then
        # re-parsed a logarithmic number of times, not once per piece.
        if len(self._buf) - self._pos + self._more_len >= self._want:
            self._run(final=False)

    def close(self) -> None:
        self._run(final=True)
        if self._state != "done":
            raise StreamError("ends inside its JSON object")

    # -- the machine ---------------------------------------------------------------------

    def _run(self, final: bool) -> None:
        if self._more:
            self._buf = self._buf[self._pos:] + "".join(self._more)
            self._pos, self._more, self._more_len = 0, [], 0
        while True:
            pos = self._skip()
            if pos is None:
                if final and self._state != "done":
                    raise StreamError("ends inside its JSON object")
                self._want = 1
                return
            c, state = self._buf[pos], self._state
            if state == "done":
                raise StreamError("has text after its JSON object")
            if state == "start":
                self._expect(c, "{", pos, "first-member")
            elif state in ("member", "first-member"):
                if c == "}" and state == "first-member":
                    self._pos, self._state = pos + 1, "done"
                elif not self._value(pos, final, self._take_key):
                    return
            elif state == "colon":
                self._expect(c, ":", pos, "value")
            elif state == "value":
                if self._key == self._list_key and c == "[":
                    self._pos, self._state, self.saw_list = pos + 1, "first-item", True
                elif not self._value(pos, final, self._take_member):
                    return
            elif state in ("item", "first-item"):
                if c == "]" and state == "first-item":
                    self._pos, self._state = pos + 1, "after-value"
                elif not self._value(pos, final, self._take_item):
                    return
            elif state == "after-item":
                self._pos = pos + 1
                self._state = {",": "item", "]": "after-value"}.get(c) or self._bad(c)
            elif state == "after-value":
                self._pos = pos + 1
                self._state = {",": "member", "}": "done"}.get(c) or self._bad(c)

    def _skip(self) -> int | None:
        """The position of the next non-blank character, None when the text has none yet."""
        found = _NONBLANK.search(self._buf, self._pos)
        if found is None:
            self._pos = len(self._buf)
            return None
        self._pos = found.start()
        return self._pos

    def _expect(self, c: str, want: str, pos: int, then: str) -> None:
        if c != want:
            self._bad(c)
        self._pos, self._state = pos + 1, then

    @staticmethod
    def _bad(c: str) -> str:
        raise StreamError(f"is not valid JSON (unexpected {c!r})")

    def _value(self, pos: int, final: bool, take: Callable[[object], None]) -> bool:
        """Parse the value at ``pos`` and ``take`` it; False when its text is not all here yet."""
        buf = self._buf
        try:
            value, end = raw_decode(buf, pos)
        except TooDeep as exc:
            raise StreamError(str(exc)) from None
        except json.JSONDecodeError as exc:
            pending = len(buf) - pos
            if pending > self._max:
                raise StreamError(f"has a value of more than {self._max} characters") from None
            if final:
                raise StreamError(f"is not valid JSON ({exc.msg})") from None
            # Most likely cut by the end of the text so far (else it fails again, at worst once
            # ``max_value`` characters are here): wait for twice as much.
            self._want = 2 * pending
            return False
        except ValueError as exc:  # an integer of too many digits
            raise StreamError(f"is not valid JSON ({type(exc).__name__})") from None
        # A number at the end of the text so far may go on in the next piece.
        if end == len(buf) and not final:
            self._want = len(buf) - pos + 1
            return False
        if end - pos > self._max:
            raise StreamError(f"has a value of more than {self._max} characters")
        self._pos = end
        take(value)
        return True

    def _take_key(self, key: object) -> None:
        if not isinstance(key, str):
            raise StreamError("is not valid JSON (a member name that is no string)")
        if key in self._keys:
            raise StreamError(f"has the member {key[:40]!r} twice")
        self._keys.add(key)
        self._key, self._state = key, "colon"

    def _take_member(self, value: object) -> None:
        self._on_member(self._key, value)
        self._state = "after-value"

    def _take_item(self, value: object) -> None:
        self._on_item(value)
        self._state = "after-item"

