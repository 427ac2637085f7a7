"""Text the platform can store and encode."""

from __future__ import annotations

UNICODE_HINT = "holds a lone UTF-16 surrogate (such as an unpaired \\ud800 escape), which is not Unicode text"


def is_unicode(text: str) -> bool:
    """Whether ``text`` is Unicode text. JSON's \\uD800-\\uDFFF escapes decode to lone surrogates, which Python keeps
    in a str but the tokenizer, the embedding cache and the store's payload (all UTF-8) refuse."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
