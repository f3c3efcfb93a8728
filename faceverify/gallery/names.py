"""Identity-name policy: normalisation, the characters refused, and the skeleton under which lookalikes collide."""

from __future__ import annotations

import unicodedata

from ..errors import InvalidNameError

MAX_NAME_LENGTH = 128

_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
# Cyrillic and Greek letters (after case folding) that render like a Latin letter.
_LOOKALIKES = str.maketrans(
    "авеіјкмнопрстухѕԁԛԝһӏүɑıαβεηικμνορτυχζϲ",
    "abeijkmhonpctyxsdqwhlyaiabenikmvoptuxzc",
)
# ASCII characters that render like another in common fonts once case is folded (capital I is lower-case l in
# many fonts, so i, l, 1 and | are one letter here; zero and o), and the separators people write between the
# parts of one name.
_ASCII_LOOKALIKES = str.maketrans({"i": "l", "1": "l", "|": "l", "0": "o", "_": " ", "-": " ", ".": " "})
_ASCII_PAIRS = (("rn", "m"), ("vv", "w"))
_SCRIPTS = ("LATIN", "CYRILLIC", "GREEK")
SKELETON_VERSION = "2"
"""Stored skeletons made by another version of :func:`name_skeleton` are made again when a gallery opens."""


def collapse_name(name: str) -> str:
    """NFC, ends trimmed, every run of space separators (Zs) inside turned into one plain space."""
    text = unicodedata.normalize("NFC", name).strip()
    spaced = "".join(" " if unicodedata.category(ch) == "Zs" else ch for ch in text)
    return " ".join(part for part in spaced.split(" ") if part)


def name_skeleton(name: str) -> str:
    """The key under which lookalike names collide: NFKC, ASCII lookalikes (I l 1 |, 0 o, rn m, vv w) and
    separators (_ - .) folded, case-folded, Cyrillic and Greek lookalike letters mapped to Latin."""
    folded = unicodedata.normalize("NFKC", collapse_name(name)).casefold()
    mapped = unicodedata.normalize("NFD", folded).translate(_LOOKALIKES).translate(_ASCII_LOOKALIKES)
    for pair, single in _ASCII_PAIRS:
        mapped = mapped.replace(pair, single)
    return collapse_name(mapped)


def validate_name(name: str) -> str:
    """Normalise (NFC, whitespace runs -> one space, trimmed) and check an identity name; raises GalleryError."""
    if not isinstance(name, str):
        raise InvalidNameError("identity name must be text")
    clean = collapse_name(name)
    if not clean:
        raise InvalidNameError("identity name is empty")
    if len(clean) > MAX_NAME_LENGTH:
        raise InvalidNameError(f"identity name is longer than {MAX_NAME_LENGTH} characters ({len(clean)})")
    for ch in clean:
        if unicodedata.category(ch) in _FORBIDDEN_CATEGORIES:
            raise InvalidNameError(f"identity name {clean!r} contains a control or invisible character (U+{ord(ch):04X})")
    compat = unicodedata.normalize("NFKC", clean)
    if "/" in compat or "\\" in compat:
        raise InvalidNameError(f"identity name {clean!r} contains a path separator")
    if compat.strip(".") == "":
        raise InvalidNameError(f"identity name {clean!r} is only dots")
    for word in clean.split(" "):
        scripts = {s for ch in word if ch.isalpha() for s in _SCRIPTS if unicodedata.name(ch, "").startswith(s + " ")}
        if len(scripts) > 1:
            raise InvalidNameError(
                f"identity name {clean!r} mixes {' and '.join(sorted(s.title() for s in scripts))} letters in "
                f"{word!r} (a lookalike spelling)"
            )
    return clean
