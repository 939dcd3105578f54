"""A benchmark's results file: what each run writes above ``NOTES_MARKER``, and the notes written by hand
below it, which every run keeps."""

from __future__ import annotations

from pathlib import Path

NOTES_MARKER = "<!-- notes below this line are kept across runs -->"


def kept_notes(out: Path) -> str:
    """The notes ``out`` holds (the marker and what follows it), or the marker alone for a new file."""
    text = out.read_text() if out.exists() else ""
    return text[text.index(NOTES_MARKER):] if NOTES_MARKER in text else NOTES_MARKER + "\n"
