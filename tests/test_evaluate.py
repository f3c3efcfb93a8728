"""Evaluation end to end on a few LFW DevTest pairs: the `faceverify evaluate` CLI, and the LFW protocols' rules."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from faceverify import cli
from faceverify.eval.cache import EmbeddingCache
from faceverify.eval.evaluate import evaluate_identification, evaluate_lfw, score_pairs
from faceverify.eval.metrics import accuracy_at, best_threshold
from faceverify.eval.pairs import Pair, lfw_image_path, read_lfw_pairs

REPORT_KEYS = {"accuracy", "accuracy_std", "auc", "eer", "tar_at_far", "threshold", "no_face", "images", "pairs",
               "protocol", "model"}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture()
def run(cache_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture):
    """run(*args) -> (exit code, stdout, stderr) of `faceverify evaluate ...`, with a throw-away embedding cache."""
    monkeypatch.setenv("FACEVERIFY_CACHE", str(cache_dir))

    def invoke(*args: str) -> tuple[int, str, str]:
        code = cli.run(["evaluate", *map(str, args)])
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


@pytest.fixture(scope="module")
def ten_pairs(lfw_root: Path) -> list[Pair]:
    """The first 5 same and 5 different DevTest pairs: every test here embeds only their 18 images."""
    pairs = read_lfw_pairs(lfw_root / "pairsDevTest.txt")
    return [p for p in pairs if p.same][:5] + [p for p in pairs if not p.same][:5]


@pytest.fixture(scope="module")
def pair_lines(ten_pairs: list[Pair], lfw_images: Path) -> list[str]:
    """``ten_pairs`` as 'path<TAB>path<TAB>label' lines with absolute paths."""
    return [f"{lfw_images / p.path_a}\t{lfw_images / p.path_b}\t{int(p.same)}" for p in ten_pairs]


def test_pairs_json_scores_and_plot(run, pair_lines: list[str], tmp_path: Path) -> None:
    pair_file = tmp_path / "pairs.tsv"
    pair_file.write_text("\n".join(pair_lines) + "\n")
    scores, plot = tmp_path / "scores.csv", tmp_path / "roc.png"
    code, out, err = run("pairs", pair_file, "--threshold", "0.9", "--json", "--scores", scores, "--plot", plot)
    assert code == 0, err
    report = json.loads(out)
    assert REPORT_KEYS <= set(report)
    assert report["pairs"] == 10 and report["threshold"] == 0.9 and report["accuracy_std"] is None
    assert set(report["tar_at_far"]) == {"1e-2", "1e-3"}
    with scores.open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 10 and [r["same"] for r in rows] == [line[-1] for line in pair_lines]
    assert plot.read_bytes().startswith(b"\x89PNG")


def test_pairs_with_folds_use_kfold_rule(run, pair_lines: list[str], tmp_path: Path) -> None:
    pair_file = tmp_path / "folded.tsv"
    pair_file.write_text("".join(f"{line}\t{i % 2}\n" for i, line in enumerate(pair_lines)))
    code, out, err = run("pairs", pair_file)
    assert code == 0, err
    assert "accuracy" in out and "over 2 folds" in out and "k-fold rule" in out
    code, _, err = run("pairs", pair_file, "--threshold", "0.9")
    assert code == 2 and "fold column" in err


def test_malformed_pair_file_names_the_line(run, pair_lines: list[str], tmp_path: Path) -> None:
    pair_file = tmp_path / "bad.tsv"
    pair_file.write_text(f"{pair_lines[0]}\n# a comment\n{pair_lines[1]}\tmaybe\textra\n")
    code, out, err = run("pairs", pair_file, "--threshold", "0.9")
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1
    assert f"{pair_file}: line 3:" in err


def _lfw_line(pair: Pair) -> str:
    """``pair`` as a line of an LFW pairs file."""
    a, b = int(pair.path_a.stem[-4:]), int(pair.path_b.stem[-4:])
    if pair.same:
        return f"{pair.path_a.parent}\t{a}\t{b}"
    return f"{pair.path_a.parent}\t{a}\t{pair.path_b.parent}\t{b}"


@pytest.fixture(scope="module")
def mini_lfw(ten_pairs: list[Pair], lfw_images: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An LFW root whose protocol files use only the images of ``ten_pairs`` (already embedded by the CLI tests);
    its image directory links to the real one (nothing is copied)."""
    root = tmp_path_factory.mktemp("lfw")
    (root / "lfw").symlink_to(lfw_images, target_is_directory=True)
    same, different = [p for p in ten_pairs if p.same], [p for p in ten_pairs if not p.same]
    for name, chosen in (("pairsDevTrain.txt", slice(2, None)), ("pairsDevTest.txt", slice(0, 2))):
        lines = [str(len(same[chosen])), *map(_lfw_line, same[chosen] + different[chosen])]
        (root / name).write_text("\n".join(lines) + "\n")
    have = {p for pair in ten_pairs for p in (pair.path_a, pair.path_b)}
    people = []
    for name in sorted({p.parent.name for p in have}):
        count = 0
        while lfw_image_path(name, count + 1) in have:
            count += 1
        if count:
            people.append(f"{name}\t{count}")
    (root / "peopleDevTest.txt").write_text("\n".join([str(len(people)), *people]) + "\n")
    return root


def test_devtest_threshold_comes_from_devtrain(verifier, mini_lfw: Path, cache_dir: Path) -> None:
    pipeline = verifier.pipeline
    cache = EmbeddingCache(pipeline.card.model_id, cache_dir)
    report = evaluate_lfw(pipeline, mini_lfw, "devtest", "largest", cache)
    assert report["pairs"] == 4 and report["threshold_set"]["pairs"] == 6

    def scored(name: str):
        return score_pairs(pipeline, read_lfw_pairs(mini_lfw / name), mini_lfw / "lfw", "largest", cache, None, name)

    train, test = scored("pairsDevTrain.txt"), scored("pairsDevTest.txt")
    assert report["threshold"] == best_threshold(train.scores, train.labels)
    assert report["accuracy"] == accuracy_at(test.scores, test.labels, report["threshold"])


def test_identification_counts(verifier, mini_lfw: Path, cache_dir: Path) -> None:
    cache = EmbeddingCache(verifier.pipeline.card.model_id, cache_dir)
    report = evaluate_identification(verifier.pipeline, mini_lfw, "largest", cache)
    counts = [int(line.split("\t")[1]) for line in (mini_lfw / "peopleDevTest.txt").read_text().splitlines()[1:]]
    assert report["gallery"] == sum(c >= 2 for c in counts) > 0
    assert report["mated"] == sum(c - 1 for c in counts if c >= 2)
    assert report["non_mated"] == sum(c == 1 for c in counts) > 0
    assert report["images"] == sum(counts) and 0 <= report["rank1"] <= 1
    assert set(report["dir_at_fpir"]) == {"1e-2", "1e-1"}
