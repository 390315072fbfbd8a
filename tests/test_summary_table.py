"""`faceblocks inspect`'s text (prepro.summary_table)."""

from __future__ import annotations


def test_inspect_text_names_the_sample_values() -> None:
    """`faceblocks inspect` (text, not only --json) says what the optional values hold."""
    from prepro.summary_table import format_summary

    summary = {"out_dir": "x", "samples": 3, "shards": 1, "failed": 0, "items": 3, "complete": True,
               "source": {}, "landmark_model": {}, "splits": {}, "box_methods": {}, "quality": None,
               "damaged": [], "missing": [], "failures": [],
               "sample_values": {"valence": {"given": 2, "missing": 1, "min": -0.5, "mean": 0.1, "max": 0.7}}}
    assert "valence: given for 2, missing for 1; min -0.50, mean 0.10, max 0.70" in format_summary(summary)


def test_inspect_text_escapes_control_characters_from_the_manifest() -> None:
    """A source name or reason holding an escape sequence (a crafted file name, a forged manifest)
    reaches the terminal escaped, never as raw control characters."""
    from prepro.summary_table import format_summary

    evil = "x\x1b[2J\x1b]0;pwned\x07.png"
    summary = {"out_dir": "o\nut", "samples": 0, "shards": 0, "failed": 1, "items": 1, "complete": True,
               "source": {"path": "/src\x1b[31m"}, "landmark_model": {}, "splits": {}, "box_methods": {},
               "quality": None, "damaged": ["shards/a\r.h5"], "missing": [evil],
               "failures": [{"source": evil, "reason": "bad\x1b[0m"}]}
    text = format_summary(summary)
    assert not any(ord(c) < 32 and c != "\n" for c in text) and "\\x1b" in text
    assert text.count("\n") == len(text.splitlines()) - 1  # no newline smuggled into a line
