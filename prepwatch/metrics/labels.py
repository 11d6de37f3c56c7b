"""Label-value hygiene: user data becomes label values only through here."""

from __future__ import annotations

import re

_UNSAFE = re.compile(r"[^\w.\-:/ +]")
MAX_LABEL_LENGTH = 64


def sanitize_label_value(value: object, max_length: int = MAX_LABEL_LENGTH) -> str:
    """Return a printable, bounded label value.

    The exposition format escapes quotes and newlines, so series cannot be forged;
    this additionally drops control and exotic characters and bounds the length so
    a class name or run name taken from user data stays a readable, small label.
    """
    text = str(value).strip()
    text = _UNSAFE.sub("_", text)
    if len(text) > max_length:
        text = text[: max_length - 1] + "~"
    return text or "_"
