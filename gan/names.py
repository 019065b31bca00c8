"""Rules for names that users type and that become file or folder names.

A run name becomes a folder under the runs root, and a download's file name
is built from a run name. Such a name may contain no path separator, no
control character and no ``..``, so that it cannot reach outside its folder,
rewrite a terminal line or break a listing.
"""

from __future__ import annotations

import re

# Maximum length of a run name: the Train page's limit, which the CLI applies to new runs too.
MAX_NAME_LENGTH = 100
# Most file systems (ext4, APFS, NTFS) store at most 255 bytes per file or folder name.
MAX_COMPONENT_BYTES = 255

# C0 controls, DEL and C1 controls: newline, tab, NUL, escape and the rest.
_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_UNSAFE_IN_FILE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def control_character(text: str) -> str | None:
    """Return the first control character of ``text`` as an escape such as ``'\\n'``, or None."""
    match = _CONTROL_CHARACTER.search(text)
    return repr(match.group()) if match else None


def long_component(path: str) -> str | None:
    """Return the first file or folder name in ``path`` longer than MAX_COMPONENT_BYTES, or None."""
    for part in re.split(r"[/\\]", path):
        if len(part.encode("utf-8", errors="surrogateescape")) > MAX_COMPONENT_BYTES:
            return part
    return None


def download_name(stem: str, ending: str) -> str:
    """Build a download's file name ``STEM-ENDING`` from letters, digits, '.', '_' and '-' only.

    Every other run of characters in ``stem`` (a path separator, a space, a
    control character) becomes one '_', ``..`` becomes '_', and leading dots
    and dashes are dropped, so the name is neither hidden nor read as an option.
    """
    safe = _UNSAFE_IN_FILE_NAME.sub("_", stem)
    while ".." in safe:
        safe = safe.replace("..", "_")
    safe = safe.lstrip(".-")[:MAX_NAME_LENGTH] or "run"
    return f"{safe}-{ending}"
