"""The shared text rules: where a reply ends at a stop string, whole or streamed."""

from __future__ import annotations

import pytest

from langchain_complm.text import StopCutter, truncate_at_stop


def test_truncate_at_stop_uses_earliest_match() -> None:
    assert truncate_at_stop("a b c d", ["c", "b"]) == ("a ", True)
    assert truncate_at_stop("a b", ["x", ""]) == ("a b", False)
    assert truncate_at_stop("a b", None) == ("a b", False)


@pytest.mark.parametrize(
    ("pieces", "stop"),
    [
        (["Hello wor", "ld. END", " more"], ["END"]),
        (["ab", "cS", "TO", "P", "x"], ["STOP", "cST"]),  # a stop split over three pieces
        (["no stop ", "here"], ["END"]),
        (["E", "N", "d"], ["END"]),  # held back, then released: not a stop after all
        (["text"], []),
    ],
)
def test_the_stream_cutter_gives_what_the_whole_text_cut_gives(
    pieces: list[str], stop: list[str]
) -> None:
    cutter = StopCutter(stop)
    streamed = "".join(cutter.feed(p) for p in pieces) + cutter.flush()
    assert streamed == truncate_at_stop("".join(pieces), stop)[0]


def test_the_stream_cutter_never_gives_text_that_may_begin_a_stop() -> None:
    cutter = StopCutter(["</answer>"])
    assert cutter.feed("42 </ans") == ""  # all of it may still begin the stop string
    assert cutter.feed("wer> trailing") == "42 "
    assert cutter.feed("more") == "" and cutter.flush() == ""
