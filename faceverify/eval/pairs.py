"""Pair lists: LFW protocol files and the generic tab-separated pair format.

Every parser raises :class:`~faceverify.errors.BadInputError` naming the file, and for malformed content the
1-based line number, with the reason.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

from ..errors import BadInputError, FaceverifyError

__all__ = [
    "LFW_FOLDS",
    "LFW_ENV",
    "Pair",
    "find_lfw_root",
    "lfw_image_dir",
    "lfw_image_path",
    "read_lfw_pairs",
    "read_lfw_people",
    "read_pair_file",
    "require_lfw_root",
]

LFW_ENV = "FACEVERIFY_LFW"
LFW_FOLDS = 10


class Pair(NamedTuple):
    """Two images and whether they show the same person.

    For LFW pairs the paths are relative to the image directory (see :func:`lfw_image_dir`); for
    :func:`read_pair_file` they are absolute or joined onto the pair file's directory. ``fold`` is ``None`` when
    the file defines no folds.
    """

    path_a: Path
    path_b: Path
    same: bool
    fold: int | None = None


# ------------------------------------------------------------------------------------------------ reading


def _read_lines(path: str | Path) -> list[str]:
    """The file's lines (without terminators), decoded as UTF-8 (a BOM is allowed)."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise BadInputError(p, "file not found") from None
    except IsADirectoryError:
        raise BadInputError(p, "is a directory, not a file") from None
    except OSError as exc:
        raise BadInputError(p, f"cannot read: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise BadInputError(p, f"line {line}: not UTF-8 text") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [ln[:-1] if ln.endswith("\r") else ln for ln in lines]


def _numbered(lines: list[str]) -> list[tuple[int, str]]:
    """(1-based line number, line) for the non-blank lines."""
    return [(i, ln) for i, ln in enumerate(lines, 1) if ln.strip()]


def _int_field(path: Path, lineno: int, text: str, what: str, minimum: int) -> int:
    t = text.strip()
    if not t.isascii() or not t.isdigit():
        raise BadInputError(path, f"line {lineno}: {what} must be an integer, got {text!r}")
    if len(t) > 18:
        raise BadInputError(path, f"line {lineno}: {what} is too large: {t[:20]}...")
    value = int(t)
    if value < minimum:
        raise BadInputError(path, f"line {lineno}: {what} must be >= {minimum}, got {value}")
    return value


# ------------------------------------------------------------------------------------------------- LFW


def lfw_image_path(name: str, number: int) -> Path:
    """Path of LFW image ``number`` (1-based) of ``name``, relative to the image directory."""
    return Path(name) / f"{name}_{number:04d}.jpg"


def _lfw_name(path: Path, lineno: int, text: str) -> str:
    name = text.strip()
    if not name:
        raise BadInputError(path, f"line {lineno}: empty name")
    if name in (".", "..") or any(c in name for c in "/\\\0") or any(c.isspace() for c in name):
        raise BadInputError(path, f"line {lineno}: invalid name {text!r}")
    return name


def read_lfw_pairs(path: str | Path) -> list[Pair]:
    """Read an LFW pairs file: pairsDevTrain.txt, pairsDevTest.txt or pairs.txt.

    The header is ``N`` (N same pairs, then N different pairs; ``fold`` is ``None``) or ``F<TAB>N`` (F folds,
    each N same pairs then N different pairs; ``fold`` is 0..F-1). Same pairs are ``name<TAB>i<TAB>j``,
    different pairs ``name1<TAB>i<TAB>name2<TAB>j``, with 1-based image numbers. The pair count and the
    same/different layout are checked against the header. Blank lines are ignored.
    """
    p = Path(path)
    rows = _numbered(_read_lines(p))
    if not rows:
        raise BadInputError(p, "empty file (expected a header line with the pair count)")
    head_no, head = rows[0]
    fields = head.split()
    if len(fields) == 1:
        n_folds, per_class, folded = 1, _int_field(p, head_no, fields[0], "pair count", 1), False
    elif len(fields) == 2:
        n_folds = _int_field(p, head_no, fields[0], "fold count", 1)
        per_class = _int_field(p, head_no, fields[1], "pairs per fold", 1)
        folded = True
    else:
        raise BadInputError(p, f"line {head_no}: header must be 'N' or 'folds<TAB>N', got {head!r}")

    body = rows[1:]
    expected = n_folds * 2 * per_class
    if len(body) < expected:
        last = body[-1][0] if body else head_no
        raise BadInputError(
            p, f"line {last}: file ends after {len(body)} pairs, header (line {head_no}) promises {expected}"
        )
    if len(body) > expected:
        raise BadInputError(
            p, f"line {body[expected][0]}: more pairs than the {expected} the header (line {head_no}) promises"
        )

    pairs: list[Pair] = []
    for k, (lineno, line) in enumerate(body):
        fold, pos = divmod(k, 2 * per_class)
        same = pos < per_class
        parts = line.split("\t")
        if len(parts) > 1:
            parts = [x.strip() for x in parts]
        else:  # tolerate space-separated files
            parts = line.split()
        if same:
            if len(parts) != 3:
                raise BadInputError(
                    p, f"line {lineno}: expected a same-person pair 'name<TAB>i<TAB>j' "
                       f"(fold {fold + 1}, pair {pos + 1} of {per_class} same), got {len(parts)} fields"
                )
            name = _lfw_name(p, lineno, parts[0])
            a = _int_field(p, lineno, parts[1], "image number", 1)
            b = _int_field(p, lineno, parts[2], "image number", 1)
            pairs.append(Pair(lfw_image_path(name, a), lfw_image_path(name, b), True, fold if folded else None))
        else:
            if len(parts) != 4:
                raise BadInputError(
                    p, f"line {lineno}: expected a different-person pair 'name1<TAB>i<TAB>name2<TAB>j' "
                       f"(fold {fold + 1}, pair {pos - per_class + 1} of {per_class} different), "
                       f"got {len(parts)} fields"
                )
            name_a = _lfw_name(p, lineno, parts[0])
            a = _int_field(p, lineno, parts[1], "image number", 1)
            name_b = _lfw_name(p, lineno, parts[2])
            b = _int_field(p, lineno, parts[3], "image number", 1)
            pairs.append(
                Pair(lfw_image_path(name_a, a), lfw_image_path(name_b, b), False, fold if folded else None)
            )
    return pairs


def read_lfw_people(path: str | Path) -> list[tuple[str, int]]:
    """Read an LFW people file (peopleDevTrain.txt, peopleDevTest.txt, people.txt) -> ``[(name, count), ...]``.

    The header is the number of ``name<TAB>count`` lines that follow. The 10-fold people.txt (header = number of
    sets, each set starting with its own count line) is also accepted; its sets are concatenated.
    """
    p = Path(path)
    rows = _numbered(_read_lines(p))
    if not rows:
        raise BadInputError(p, "empty file (expected a header line with the count)")
    head_no, head = rows[0]
    header = _int_field(p, head_no, head, "count", 0)
    # folded layout: the line after the header is itself a bare count
    folded = len(rows) > 1 and len(rows[1][1].split()) == 1 and rows[1][1].strip().isdigit()
    sets = header if folded else 1
    i = 1
    people: list[tuple[str, int]] = []
    for _ in range(sets):
        if folded:
            if i >= len(rows):
                raise BadInputError(p, f"line {rows[-1][0]}: file ends before set count {len(people)}")
            n = _int_field(p, rows[i][0], rows[i][1], "set size", 0)
            i += 1
        else:
            n = header
        if i + n > len(rows):
            raise BadInputError(p, f"line {rows[-1][0]}: file ends after {len(rows) - i} of {n} people")
        for lineno, line in rows[i:i + n]:
            parts = line.split("\t") if "\t" in line else line.split()
            if len(parts) != 2:
                raise BadInputError(p, f"line {lineno}: expected 'name<TAB>count', got {len(parts)} fields")
            people.append((_lfw_name(p, lineno, parts[0]), _int_field(p, lineno, parts[1], "image count", 1)))
        i += n
    if i < len(rows):
        raise BadInputError(p, f"line {rows[i][0]}: more entries than the header (line {head_no}) promises")
    return people


def lfw_image_dir(root: str | Path) -> Path:
    """The directory holding ``<Name>/<Name>_NNNN.jpg``: ``<root>/lfw`` if it exists, else ``root`` itself."""
    r = Path(root)
    if not r.is_dir():
        raise BadInputError(r, "LFW root is not a directory")
    sub = r / "lfw"
    return sub if sub.is_dir() else r


def find_lfw_root(explicit: str | Path | None = None) -> Path | None:
    """Locate the LFW root (the directory with the protocol files): ``explicit``, else ``$FACEVERIFY_LFW`` (if set
    and non-empty), else ``None``.

    A given path that is not a directory raises :class:`BadInputError`, since the user asked for it.
    """
    if explicit is not None:
        p = Path(explicit).expanduser()
        if not p.is_dir():
            raise BadInputError(p, "LFW root not found (not a directory)")
        return p
    env = os.environ.get(LFW_ENV, "").strip()
    if env:
        p = Path(env).expanduser()
        if not p.is_dir():
            raise BadInputError(p, f"LFW root from ${LFW_ENV} not found (not a directory)")
        return p
    return None


def require_lfw_root(explicit: str | Path | None = None, option: str = "--root") -> Path:
    """:func:`find_lfw_root`, raising :class:`FaceverifyError` with a one-line hint naming ``option`` (the
    command's flag for the LFW root) and ``$FACEVERIFY_LFW`` when neither gives one."""
    found = find_lfw_root(explicit)
    if found is None:
        raise FaceverifyError(f"LFW not found: pass {option} DIR or set {LFW_ENV}")
    return found


# ------------------------------------------------------------------------------------------ generic pairs


def read_pair_file(path: str | Path) -> list[Pair]:
    """Read a generic pair list: ``path1<TAB>path2<TAB>label[<TAB>fold]`` per line.

    ``label`` is 1 (same person) or 0 (different); ``fold`` an optional non-negative integer. Relative image paths
    are joined onto the pair file's directory. Blank lines and lines starting with ``#`` are skipped. Either
    all pairs have a fold or none do.
    """
    p = Path(path)
    base = p.absolute().parent
    pairs: list[Pair] = []
    first_fold_line: int | None = None
    first_nofold_line: int | None = None
    for lineno, line in enumerate(_read_lines(p), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) not in (3, 4):
            raise BadInputError(
                p, f"line {lineno}: expected 'path1<TAB>path2<TAB>label[<TAB>fold]', got {len(parts)} "
                   f"tab-separated field{'s' if len(parts) != 1 else ''}"
            )
        paths = []
        for k in (0, 1):
            raw = parts[k].strip()
            if not raw:
                raise BadInputError(p, f"line {lineno}: path {k + 1} is empty")
            if "\0" in raw:
                raise BadInputError(p, f"line {lineno}: path {k + 1} contains a NUL character")
            paths.append(base / raw)
        label = parts[2].strip()
        if label not in ("0", "1"):
            raise BadInputError(p, f"line {lineno}: label must be 1 (same) or 0 (different), got {parts[2]!r}")
        fold: int | None = None
        if len(parts) == 4:
            fold = _int_field(p, lineno, parts[3], "fold", 0)
            first_fold_line = first_fold_line or lineno
        else:
            first_nofold_line = first_nofold_line or lineno
        if first_fold_line is not None and first_nofold_line is not None:
            raise BadInputError(
                p, f"line {lineno}: some pairs have a fold (line {first_fold_line}) and some do not "
                   f"(line {first_nofold_line})"
            )
        pairs.append(Pair(paths[0], paths[1], label == "1", fold))
    return pairs
