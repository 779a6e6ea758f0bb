"""JSON parsed with one nesting bound of statesync's own, the same on every Python. Pure.

The json module's only bound is the interpreter's: Python 3.11 raises RecursionError about
1,000 levels down (fewer, the deeper its caller's stack), 3.13 parses 5,000 and fails at
10,000, 3.14 measures the C stack and parses 10,000. A refusal that depends on the Python
that runs statesync is no refusal to rely on (and an uncaught RecursionError was a
traceback). So every text statesync parses, a KV value, a file in the tree or an HTTP answer,
is measured first: nested deeper than MAX_DEPTH, it is refused with TooDeep, a ValueError,
before the parser sees it. Every ``json.loads`` of statesync is ``loads`` here, and the
manifest stream's ``raw_decode`` is the one here (tests/unit/test_jsonload.py holds the code
to that).
"""
from __future__ import annotations

import json
import re
from itertools import accumulate
from typing import Any

# Far above any document statesync writes or reads (4 levels at most), far below the
# recursion any Python allows the parser.
MAX_DEPTH = 100

# What the measure skips: a string (closed, or open up to the end of the text, as in text
# still arriving) or a run of characters that are neither quotes nor brackets. What is left
# is the brackets outside strings.
_SKIP = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*(?:"|\\?\Z)|[^"\[\]{}]+', re.DOTALL)
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}
_DECODER = json.JSONDecoder()


class TooDeep(ValueError):
    """Arrays and objects nested more than MAX_DEPTH deep."""

    def __init__(self) -> None:
        super().__init__(f"is nested more than {MAX_DEPTH} deep")


def too_deep(text: str, start: int = 0, end: int | None = None) -> bool:
    """Whether ``text[start:end]`` opens more than MAX_DEPTH arrays or objects that are still
    open at one point. Linear; a text with few brackets costs two counts."""
    if text.count("[", start, end) + text.count("{", start, end) <= MAX_DEPTH:
        return False
    brackets = _SKIP.sub("", text[start:end])
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0) > MAX_DEPTH


def loads(data: str | bytes | bytearray, **kwargs: Any) -> Any:
    """``json.loads``, but raise TooDeep for a text nested deeper than MAX_DEPTH."""
    if isinstance(data, (bytes, bytearray)):
        # what json.loads does with bytes, done first so that the measure reads characters
        data = data.decode(json.detect_encoding(data), "surrogatepass")
    elif not isinstance(data, str):  # None, say: the TypeError json.loads raises, which callers catch
        raise TypeError(f"the JSON object must be str, bytes or bytearray, not {type(data).__name__}")
    if too_deep(data):
        raise TooDeep()
    return json.loads(data, **kwargs)


def raw_decode(text: str, pos: int) -> tuple[Any, int]:
    """``json.JSONDecoder().raw_decode(text, pos)``: the value that starts at ``pos`` and where
    it ends. Raise TooDeep when that value, or the text from ``pos`` that failed to parse (a
    value still arriving), is nested deeper than MAX_DEPTH; json.JSONDecodeError as json does.
    Measured after the parse, so that a value costs no second pass over the text after it."""
    try:
        value, end = _DECODER.raw_decode(text, pos)
    except RecursionError:  # Python 3.11 gives up about 1,000 levels down: deeper than MAX_DEPTH
        raise TooDeep() from None
    except json.JSONDecodeError:
        if too_deep(text, pos):
            raise TooDeep() from None
        raise
    if too_deep(text, pos, end):
        raise TooDeep()
    return value, end
