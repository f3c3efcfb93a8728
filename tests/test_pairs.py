"""Pair-list parsers: LFW protocol files and the generic tab-separated format."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from faceverify.errors import BadInputError, FaceverifyError
from faceverify.eval.pairs import (
    LFW_ENV,
    Pair,
    find_lfw_root,
    lfw_image_dir,
    read_lfw_pairs,
    read_lfw_people,
    read_pair_file,
    require_lfw_root,
)


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    p = tmp_path / name
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text, encoding="utf-8")
    return p


def error_of(fn, path: Path) -> BadInputError:
    with pytest.raises(BadInputError) as info:
        fn(path)
    assert info.value.path == str(path)
    assert str(path) in str(info.value)
    return info.value


# ------------------------------------------------------------------------------------------------ LFW pairs


def test_read_lfw_pairs_dev_format(tmp_path):
    p = write(tmp_path, "pairsDevTest.txt",
              "2\nAbel_Pacheco\t1\t4\nZico\t2\t3\nAbel_Pacheco\t1\tZico\t12\nA_B\t3\tC_D\t1\n")
    pairs = read_lfw_pairs(p)
    assert pairs == [
        Pair(Path("Abel_Pacheco/Abel_Pacheco_0001.jpg"), Path("Abel_Pacheco/Abel_Pacheco_0004.jpg"), True, None),
        Pair(Path("Zico/Zico_0002.jpg"), Path("Zico/Zico_0003.jpg"), True, None),
        Pair(Path("Abel_Pacheco/Abel_Pacheco_0001.jpg"), Path("Zico/Zico_0012.jpg"), False, None),
        Pair(Path("A_B/A_B_0003.jpg"), Path("C_D/C_D_0001.jpg"), False, None),
    ]


def test_read_lfw_pairs_folds(tmp_path):
    lines = ["3\t2"]
    for fold in range(3):
        lines += [f"S{fold}\t1\t2", f"S{fold}\t2\t3", f"D{fold}\t1\tE{fold}\t1", f"D{fold}\t2\tE{fold}\t2"]
    p = write(tmp_path, "pairs.txt", "\r\n".join(lines) + "\r\n")  # CRLF is fine
    pairs = read_lfw_pairs(p)
    assert len(pairs) == 12
    assert [q.fold for q in pairs] == [0] * 4 + [1] * 4 + [2] * 4
    assert [q.same for q in pairs] == [True, True, False, False] * 3
    assert pairs[4].path_a == Path("S1/S1_0001.jpg")


@pytest.mark.parametrize(
    "text, line, fragment",
    [
        ("", None, "empty file"),
        ("x\n", 1, "pair count must be an integer"),
        ("1 2 3\n", 1, "header"),
        ("0\n", 1, "pair count must be >= 1"),
        ("1\nA\t1\t2\n", 2, "file ends after 1 pairs"),
        ("1\nA\t1\t2\nB\t1\tC\t1\nD\t1\t2\n", 4, "more pairs"),
        ("1\nA\t1\tB\t2\nB\t1\tC\t1\n", 2, "same-person pair"),
        ("1\nA\t1\t2\nB\t1\t2\n", 3, "different-person pair"),
        ("1\nA\tone\t2\nB\t1\tC\t1\n", 2, "image number must be an integer"),
        ("1\nA\t0\t2\nB\t1\tC\t1\n", 2, "image number must be >= 1"),
        ("1\nA\t1\t2\n../x\t1\tC\t1\n", 3, "invalid name"),
        ("2\t1\nA\t1\t2\nB\t1\tC\t1\nA\t1\tC\t1\nA\t1\t2\n", 4, "same-person pair"),
        (b"1\nA\t1\t2\n\xff\t1\tC\t1\n", 3, "not UTF-8"),
    ],
)
def test_read_lfw_pairs_malformed(tmp_path, text, line, fragment):
    p = write(tmp_path, "pairs.txt", text)
    err = error_of(read_lfw_pairs, p)
    if line is not None:
        assert f"line {line}:" in err.reason
    assert fragment in err.reason


def test_read_lfw_pairs_missing_file(tmp_path):
    err = error_of(read_lfw_pairs, tmp_path / "nope.txt")
    assert "not found" in err.reason


# ----------------------------------------------------------------------------------------------- LFW people


def test_read_lfw_people(tmp_path):
    p = write(tmp_path, "peopleDevTest.txt", "3\nAJ_Lamas\t1\nZico\t3\nAaron_Guiel\t1\n")
    assert read_lfw_people(p) == [("AJ_Lamas", 1), ("Zico", 3), ("Aaron_Guiel", 1)]


def test_read_lfw_people_folded(tmp_path):
    p = write(tmp_path, "people.txt", "2\n2\nA\t1\nB\t2\n1\nC\t4\n")
    assert read_lfw_people(p) == [("A", 1), ("B", 2), ("C", 4)]


@pytest.mark.parametrize(
    "text, line, fragment",
    [
        ("2\nA\t1\n", 2, "file ends after 1 of 2"),
        ("1\nA\t1\nB\t2\n", 3, "more entries"),
        ("2\nA\t1\nB\tx\n", 3, "image count must be an integer"),
        ("2\nA\t1\nB\t1\t2\n", 3, "expected 'name<TAB>count'"),
        ("two\nA\t1\n", 1, "count must be an integer"),
    ],
)
def test_read_lfw_people_malformed(tmp_path, text, line, fragment):
    p = write(tmp_path, "people.txt", text)
    err = error_of(read_lfw_people, p)
    assert f"line {line}:" in err.reason and fragment in err.reason


# ------------------------------------------------------------------------------------------ LFW directories


def test_lfw_image_dir(tmp_path):
    (tmp_path / "lfw" / "Zico").mkdir(parents=True)
    assert lfw_image_dir(tmp_path) == tmp_path / "lfw"
    flat = tmp_path / "flat"
    (flat / "Zico").mkdir(parents=True)
    assert lfw_image_dir(flat) == flat
    with pytest.raises(BadInputError):
        lfw_image_dir(tmp_path / "missing")


def test_find_lfw_root(tmp_path, monkeypatch):
    monkeypatch.delenv(LFW_ENV, raising=False)
    assert find_lfw_root(tmp_path) == tmp_path
    with pytest.raises(BadInputError):
        find_lfw_root(tmp_path / "missing")
    env_root = tmp_path / "env"
    env_root.mkdir()
    monkeypatch.setenv(LFW_ENV, str(env_root))
    assert find_lfw_root() == env_root
    assert find_lfw_root(tmp_path) == tmp_path  # explicit wins
    monkeypatch.setenv(LFW_ENV, str(tmp_path / "missing"))
    with pytest.raises(BadInputError):
        find_lfw_root()
    monkeypatch.setenv(LFW_ENV, "")
    assert find_lfw_root() is None  # no built-in default location


def test_require_lfw_root(tmp_path, monkeypatch):
    monkeypatch.delenv(LFW_ENV, raising=False)
    assert require_lfw_root(tmp_path) == tmp_path
    with pytest.raises(FaceverifyError, match=f"^LFW not found: pass --lfw DIR or set {LFW_ENV}$"):
        require_lfw_root(None, option="--lfw")
    with pytest.raises(BadInputError):
        require_lfw_root(tmp_path / "missing")


# ------------------------------------------------------------------------------------------------ real LFW


def test_real_lfw_dev_files(lfw_root):
    test = read_lfw_pairs(lfw_root / "pairsDevTest.txt")
    assert sum(p.same for p in test) == 500 and sum(not p.same for p in test) == 500
    assert all(p.fold is None for p in test)
    train = read_lfw_pairs(lfw_root / "pairsDevTrain.txt")
    assert sum(p.same for p in train) == 1100 and len(train) == 2200
    people = read_lfw_people(lfw_root / "peopleDevTest.txt")
    assert len(people) == 1711 and all(n >= 1 for _, n in people)
    assert len(read_lfw_people(lfw_root / "peopleDevTrain.txt")) == 4038


def test_real_lfw_pairs_txt_and_images(lfw_root):
    pairs = read_lfw_pairs(lfw_root / "pairs.txt")
    assert len(pairs) == 6000
    for fold in range(10):
        chunk = pairs[fold * 600:(fold + 1) * 600]
        assert all(p.fold == fold for p in chunk)
        assert [p.same for p in chunk] == [True] * 300 + [False] * 300
    image_dir = lfw_image_dir(lfw_root)
    referenced = {p.path_a for p in pairs} | {p.path_b for p in pairs}
    for name in ("pairsDevTest.txt", "pairsDevTrain.txt"):
        referenced |= {q for p in read_lfw_pairs(lfw_root / name) for q in (p.path_a, p.path_b)}
    missing = sorted(str(r) for r in referenced if not (image_dir / r).is_file())
    assert not missing, f"{len(missing)} referenced images missing, e.g. {missing[:5]}"


# --------------------------------------------------------------------------------------------- generic pairs


def test_read_pair_file(tmp_path):
    p = write(tmp_path, "pairs.tsv",
              "# comment\n\n"
              "a.jpg\tsub/b.jpg\t1\n"
              "   # indented comment\n"
              "/abs/c.jpg\td.jpg\t0\n")
    pairs = read_pair_file(p)
    assert pairs == [
        Pair(tmp_path / "a.jpg", tmp_path / "sub" / "b.jpg", True, None),
        Pair(Path("/abs/c.jpg"), tmp_path / "d.jpg", False, None),
    ]


def test_read_pair_file_folds_and_relative_location(tmp_path, monkeypatch):
    sub = tmp_path / "lists"
    sub.mkdir()
    write(sub, "p.tsv", "x.jpg\ty.jpg\t1\t0\nx.jpg\tz.jpg\t0\t3\r\n")
    monkeypatch.chdir(tmp_path)
    pairs = read_pair_file(Path("lists/p.tsv"))
    assert [p.fold for p in pairs] == [0, 3]
    assert pairs[0].path_a == sub / "x.jpg"  # relative to the pair file, not the working directory


@pytest.mark.parametrize(
    "text, line, fragment",
    [
        ("a\tb\t1\na\tb\n", 2, "got 2 tab-separated fields"),
        ("a b 1\n", 1, "got 1 tab-separated field"),
        ("# c\na\tb\tyes\n", 2, "label must be 1 (same) or 0 (different)"),
        ("a\tb\t2\n", 1, "label must be"),
        ("\ta\t1\n", 1, "path 1 is empty"),
        ("a\t \t1\n", 1, "path 2 is empty"),
        ("a\tb\t1\tx\n", 1, "fold must be an integer"),
        ("a\tb\t1\t0\na\tb\t1\n", 2, "some pairs have a fold"),
        ("a\tb\t1\t0\textra\n", 1, "got 5 tab-separated fields"),
        (b"a\tb\t1\n\xc3\x28\tb\t1\n", 2, "not UTF-8"),
    ],
)
def test_read_pair_file_malformed(tmp_path, text, line, fragment):
    p = write(tmp_path, "pairs.tsv", text)
    err = error_of(read_pair_file, p)
    assert f"line {line}:" in err.reason
    assert fragment in err.reason


def test_read_pair_file_unreadable(tmp_path):
    assert "not found" in error_of(read_pair_file, tmp_path / "missing.tsv").reason
    assert "directory" in error_of(read_pair_file, tmp_path).reason


def test_read_pair_file_empty_is_empty_list(tmp_path):
    assert read_pair_file(write(tmp_path, "e.tsv", "# nothing\n\n")) == []


_fuzz_alphabet = st.sampled_from(list(b"\t\n\r #01x./\xff\xc3\x00 ab"))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(st.binary(max_size=300), st.lists(_fuzz_alphabet, max_size=200).map(bytes)))
def test_read_pair_file_fuzz_only_raises_bad_input(tmp_path, data):
    p = tmp_path / "fuzz.tsv"
    p.write_bytes(data)
    try:
        pairs = read_pair_file(p)
    except BadInputError as exc:
        assert exc.path == str(p)
        return
    assert all(isinstance(q, Pair) and isinstance(q.same, bool) for q in pairs)
