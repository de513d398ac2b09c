"""pyrelctl.terminal: text shown on root's terminal, never obeyed (issue 26, 2)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pyrelctl.terminal import bounded, visible


def test_controls_bidi_and_undecodable_bytes_are_shown_as_escapes() -> None:
    assert visible("a\x1b]0;t\x07b") == "a\\x1b]0;t\\x07b"
    assert visible("\x9b2J \x9d \x7f \b \r \n") == "\\x9b2J \\x9d \\x7f \\x08 \\x0d \\x0a"
    assert visible("\u202egnp.exe \u2066 \u2028 \ufeff") == "\\u202egnp.exe \\u2066 \\u2028 \\ufeff"
    assert visible("\udc9b") == "\\x9b"  # the byte surrogateescape kept
    assert visible("\U000e0001") == "\\U000e0001"


def test_text_people_write_stays_as_it_is() -> None:
    text = "café 日本語 Ελληνικά\tжж — ok ✓ 🙂"
    assert visible(text) == text
    assert visible("a\nb", newlines=True) == "a\nb"


def test_a_long_line_is_cut_with_its_length() -> None:
    assert bounded("x" * 10, 10) == "x" * 10
    assert bounded("x" * 11, 10) == "x" * 10 + "... (11 characters in all)"
    # No escape is cut in two.
    assert bounded("\x1b" * 5, 10) == "\\x1b\\x1b... (5 characters in all)"
    huge = bounded("\x1b" + "a" * 32 * 1024 * 1024, 300)
    assert len(huge) < 350 and huge.endswith("(33554433 characters in all)")


@given(st.text())
def test_nothing_but_printables_and_tabs_remain(text: str) -> None:
    for shown in (visible(text), bounded(text, 50)):
        assert all(c.isprintable() or c == "\t" for c in shown), shown
    assert len(bounded(text, 50)) <= 50 + len("... (  characters in all)") + len(str(len(text)))
