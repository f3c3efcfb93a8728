"""Training pipeline: face cache, sampler, augmentation, losses and miners, resume, DDP, export round-trip.

Wiring tests use a synthetic identity-folder data set (smooth colour patterns per identity), a stand-in
detector and a tiny registered network so that they run in seconds; the real backbones get a forward/backward
smoke test and the real front end one crop-parity check on LFW.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from faceverify import networks
from faceverify.align import center_crop
from faceverify.detect import Face
from faceverify.errors import FaceverifyError
from faceverify.train.config import AugmentConfig, LossConfig, ObjectiveConfig, config_from_dict, load_config
from faceverify.train.data import BatchAugment, IdentityBatches, TrainImages
from faceverify.train.objective import Objective, batch_statistics, build_miner
from faceverify.train.prepare import FACE, NO_FACE, UNREADABLE, FaceCache, list_identity_folders, prepare, scaled_geometries

REPO = Path(__file__).resolve().parents[1]
SIZE = 32
TINY_NET = '''
import torch
from torch import nn
from faceverify.networks import register


@register("tiny_test_net")
class TinyNet(nn.Module):
    """Two strided convolutions and a linear embedding: enough to exercise the training pipeline."""

    def __init__(self, embedding_size: int = 16):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU())
        self.body = nn.Sequential(nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU())
        self.fc = nn.Linear(16, embedding_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(self.stem(x)).mean(dim=(2, 3)))

    def stage_groups(self) -> list[list[nn.Parameter]]:
        return [list(m.parameters()) for m in (self.stem, self.body, self.fc)]
'''
exec(compile(TINY_NET, "tiny_test_net", "exec"))


class StandInDetector:
    """Returns one face whose landmarks are the template scaled to the image (none for files named nf_*)."""

    def __init__(self, template: list[list[float]], size: int):
        self.landmarks = np.asarray(template, np.float32)
        self.size = size
        self.calls = 0

    def template_for(self, template: np.ndarray) -> np.ndarray:
        """Its landmarks are on the template's (MTCNN's) points."""
        return template
        self.blank: set[int] = set()

    def detect(self, images: list[np.ndarray]) -> list[list[Face]]:
        self.calls += 1
        out = []
        for img in images:
            if int(img[0, 0, 0]) == 0 and int(img[0, 0, 1]) == 255:  # marker pixel: "no face here"
                out.append([])
                continue
            k = img.shape[1] / self.size
            out.append([Face(np.array([0, 0, img.shape[1], img.shape[0]], np.float32), 0.99, self.landmarks * k)])
        return out


def _write_dataset(root: Path, identities: int = 6, per_identity: int = 6, singletons: int = 4) -> None:
    """Identity folders of 48 x 48 PNGs: a smooth colour pattern per identity plus per-image noise."""
    rng = np.random.default_rng(0)
    for k in range(identities + singletons):
        folder = root / f"person_{k:02d}"
        folder.mkdir(parents=True)
        base = np.kron(rng.uniform(30, 225, (4, 4, 3)), np.ones((12, 12, 1)))
        for i in range(per_identity if k < identities else 1):
            img = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
            if k == 0 and i == 1:
                img[0, 0] = (0, 255, 0)  # the stand-in detector finds no face here
            Image.fromarray(img).save(folder / f"img_{i}.png")
    (root / "person_01" / "broken.png").write_bytes(b"not an image")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("faces")
    _write_dataset(root)
    return root


@pytest.fixture(scope="module")
def geometry():
    return scaled_geometries([SIZE])


@pytest.fixture(scope="module")
def cache(dataset: Path, geometry, tmp_path_factory) -> FaceCache:
    out = tmp_path_factory.mktemp("cache")
    return prepare(list_identity_folders(dataset), out, geometry, chunk_size=8,
                   detector=StandInDetector(geometry[0].template, 48))  # type: ignore[arg-type]


def tiny_config(cache_dir: Path, out: Path, **sections) -> dict:
    cfg = dict(
        name="tiny-test", seed=3,
        data=dict(cache=str(cache_dir), batch_size=12, m_per_class=3, singletons_per_batch=3),
        model=dict(architecture="tiny_test_net", embedding_size=16, input_size=SIZE),
        objective=dict(miner="semihard", memory_size=32,
                       losses=[dict(type="triplet", margin=0.2), dict(type="supcon", weight=0.5, temperature=0.1)]),
        optim=dict(lr=3e-3, warmup_steps=2, body_lr_scale=0.5),
        run=dict(out=str(out), epochs=2, steps_per_epoch=3, log_every=1),
        validation=dict(lfw_root="none"),
    )
    for key, value in sections.items():
        if isinstance(value, dict):
            cfg.setdefault(key, {}).update(value)
        else:
            cfg[key] = value
    return cfg


# ------------------------------------------------------------------------------------------------ data


def test_prepare_flags_and_resumes(dataset: Path, geometry, cache: FaceCache, tmp_path: Path):
    listing = list_identity_folders(dataset)
    assert len(cache.paths) == len(listing.paths) == 41 and cache.complete
    status = dict(zip(cache.paths, cache.status))
    assert status["person_01/broken.png"] == UNREADABLE
    assert status["person_00/img_1.png"] == NO_FACE
    assert (cache.status == FACE).sum() == 39
    crops = cache.crops(SIZE)
    assert crops.shape == (41, SIZE, SIZE, 3) and crops.dtype == np.uint8
    no_face = cache.paths.index("person_00/img_1.png")
    image = np.asarray(Image.open(dataset / "person_00" / "img_1.png").convert("RGB"))
    assert np.array_equal(crops[no_face], center_crop(image, SIZE))
    # interrupted after the first chunk: a re-run redoes only the rest, and a complete cache is left alone
    out = tmp_path / "partial"
    detector = StandInDetector(geometry[0].template, 48)
    prepare(listing, out, geometry, chunk_size=8, detector=detector)  # type: ignore[arg-type]
    (out / "done.json").write_text("[0]")
    detector.calls = 0
    again = prepare(listing, out, geometry, chunk_size=8, detector=detector)  # type: ignore[arg-type]
    assert detector.calls == 5 and again.complete
    assert np.array_equal(again.crops(SIZE), crops)
    detector.calls = 0
    prepare(listing, out, geometry, chunk_size=8, detector=detector)  # type: ignore[arg-type]
    assert detector.calls == 0


@pytest.mark.parametrize("kind", ["mtcnn", "yunet", "yunet-onet"])
def test_prepared_crops_match_the_pipeline(lfw_image, kind):
    """The cache's crops are the product's: same detector, face choice, template and alignment (YuNet's
    landmarks onto the template moved to its points, as the stills pipeline aligns them)."""
    from faceverify.detect import make_detector, select_faces
    from faceverify.images import load_image
    from faceverify.pipeline import FacePipeline
    from faceverify.train.prepare import process_chunk

    files = [lfw_image("Aaron_Peirsol", 1), lfw_image("Abdullah_Gul", 2)]
    detector = make_detector(kind, "cpu")
    result = process_chunk([str(f) for f in files], scaled_geometries([150], "dlib-resnet-v1"), "center", detector)
    pipeline = FacePipeline("dlib-resnet-v1", "cpu", detector=detector)
    images = [load_image(f) for f in files]
    for k, (image, faces) in enumerate(zip(images, detector.detect(images))):  # the same batch as the chunk's
        chosen = select_faces(faces, image.shape, "center")
        assert result.status[k] == FACE and np.allclose(result.landmarks[k], chosen[0].landmarks)
        assert np.array_equal(result.crops[150][k], pipeline.align(image, chosen)[0])


def test_batches_hold_m_per_class_plus_singletons(cache: FaceCache):
    images = TrainImages(cache, SIZE)
    batches = IdentityBatches(images.labels, 12, 3, 3, seed=1, steps_per_epoch=5)
    plan = batches.epoch(0)
    counts = np.bincount(images.labels)
    assert plan.shape == (5, 12)
    for rows in plan:
        identities, per = np.unique(images.labels[rows[:9]], return_counts=True)
        assert len(identities) == 3 and (per == 3).all() and (counts[identities] >= 2).all()
        assert (counts[images.labels[rows[9:]]] == 1).all()
    assert np.array_equal(plan, batches.epoch(0)) and not np.array_equal(plan, batches.epoch(1))
    other_rank = IdentityBatches(images.labels, 12, 3, 3, seed=1, rank=1, world_size=2, steps_per_epoch=5)
    assert not np.array_equal(plan, other_rank.epoch(0))


def test_augmentation_on_the_batch(cache: FaceCache):
    crops = torch.from_numpy(np.array(cache.crops(SIZE)[:8]))
    mean, std = (127.5,) * 3, (128.0,) * 3
    off = AugmentConfig(flip=0, scale=0, shift=0, rotate=0, brightness=0, contrast=0, saturation=0, grayscale=0,
                        blur=0, erase=0)
    plain = BatchAugment(off, mean, std, torch.Generator().manual_seed(0))
    assert torch.allclose(plain(crops), plain.normalise(crops), atol=1e-3)  # identity geometry is exact
    on = AugmentConfig(blur=1.0, erase=1.0, grayscale=0.5)
    a = BatchAugment(on, mean, std, torch.Generator().manual_seed(5))(crops)
    b = BatchAugment(on, mean, std, torch.Generator().manual_seed(5))(crops)
    assert a.shape == (8, 3, SIZE, SIZE) and torch.isfinite(a).all() and torch.equal(a, b)
    assert (a == 0).all(1).flatten(1).any(1).all()  # every sample has an erased rectangle (the mean colour, 0)
    mirrored = BatchAugment(replace(off, flip=1.0), mean, std, torch.Generator().manual_seed(0))
    assert torch.allclose(mirrored(crops), plain.normalise(crops).flip(-1), atol=1e-3)


def test_side_light_darkens_one_side_of_the_face_and_leaves_the_other():
    """light=1: every crop keeps its full brightness on one side of an edge and a gain in light_gain on the other
    (a ratio to the plain crop that is 1 at one edge column and at most the largest gain at the other); on
    evenly grey crops, so that the ratio is the light alone."""
    crops = torch.full((8, SIZE, SIZE, 3), 200, dtype=torch.uint8)
    off = AugmentConfig(flip=0, scale=0, shift=0, rotate=0, brightness=0, contrast=0, saturation=0, grayscale=0,
                        blur=0, erase=0)
    unit = ((0.0,) * 3, (1.0,) * 3)
    plain = BatchAugment(off, *unit, torch.Generator().manual_seed(0))(crops)
    lit = BatchAugment(replace(off, light=1.0, light_gain=(0.2, 0.4)), *unit, torch.Generator().manual_seed(1))(crops)
    ratio = (lit.sum(1) / plain.sum(1)).mean(1)  # per crop and column, averaged down the rows
    first, last = ratio[:, :4].mean(1), ratio[:, -4:].mean(1)
    bright, dark = torch.maximum(first, last), torch.minimum(first, last)
    assert (bright > 0.97).all() and (dark < 0.5).all(), (first, last)
    assert not torch.equal(first > last, torch.ones(8, dtype=torch.bool))  # both sides are drawn
    assert torch.equal(BatchAugment(replace(off, light=0.0), *unit, torch.Generator().manual_seed(1))(crops), plain)


# ------------------------------------------------------------------------------------------- objective


def _toy_clusters(n_classes: int = 6, per_class: int = 4, dim: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_classes, dim, generator=g) * 3
    labels = torch.arange(n_classes).repeat_interleave(per_class)
    return centres[labels] + torch.randn(len(labels), dim, generator=g), labels


@pytest.mark.parametrize("memory_size", [0, 48])
def test_loss_falls_on_a_separable_toy_set(memory_size: int):
    torch.manual_seed(0)
    x, labels = _toy_clusters()
    cfg = ObjectiveConfig(losses=[LossConfig("triplet", 1.0, 0.2), LossConfig("supcon", 1.0, temperature=0.1)],
                          miner="batch_hard", memory_size=memory_size)
    objective = Objective(cfg, 16)
    head = nn.Linear(8, 16)
    opt = torch.optim.Adam(head.parameters(), lr=0.02)
    history = []
    for _ in range(40):
        loss, stats = objective(head(x), labels)
        history.append(stats)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert history[0]["loss_triplet"] > 0.05 and history[-1]["loss_triplet"] < 0.01
    if not memory_size:  # with 3 positives per anchor SupCon cannot go below log 3 (a memory adds positives)
        assert history[0]["loss_supcon"] > np.log(3) + 0.5 and history[-1]["loss_supcon"] < np.log(3) + 0.1
    assert stats["pos_cos"] > stats["neg_cos"] + 0.5 and stats["active"] < history[0]["active"]


@pytest.mark.parametrize("miner", ["semihard", "hard", "batch_hard", "multi_similarity"])
def test_mined_tuples_are_hard(miner: str):
    z, labels = _toy_clusters(seed=1)
    z = torch.nn.functional.normalize(z + 2 * torch.randn_like(z), dim=1)
    sim = z @ z.T
    same = labels[:, None] == labels[None, :]
    margin = 0.2
    mined = build_miner(ObjectiveConfig(miner=miner, miner_margin=margin))(z, labels)
    if miner == "multi_similarity":
        a1, p, a2, n = mined
        assert len(a1) and len(a2)
        # a positive is kept only if it is less similar than the anchor's hardest negative + epsilon, and vice versa
        hardest_neg = torch.where(~same, sim, torch.tensor(-2.0)).max(1).values
        hardest_pos = torch.where(same & ~torch.eye(len(z), dtype=torch.bool), sim, torch.tensor(2.0)).min(1).values
        assert (sim[a1, p] - 0.1 < hardest_neg[a1]).all() and (sim[a2, n] + 0.1 > hardest_pos[a2]).all()
        return
    a, p, n = mined
    assert len(a) > 0 and (labels[a] == labels[p]).all() and (labels[a] != labels[n]).all() and (a != p).all()
    gap = sim[a, p] - sim[a, n]  # how much closer the positive is than the negative
    if miner == "batch_hard":
        pos = torch.where(same & ~torch.eye(len(z), dtype=torch.bool), sim, torch.tensor(2.0))
        neg = torch.where(~same, sim, torch.tensor(-2.0))
        assert torch.allclose(sim[a, p], pos.min(1).values[a]) and torch.allclose(sim[a, n], neg.max(1).values[a])
        return
    valid = same[:, :, None] & ~torch.eye(len(z), dtype=torch.bool)[:, :, None] & ~same[:, None, :]
    all_gaps = sim[:, :, None] - sim[:, None, :]
    if miner == "semihard":
        assert ((gap > 0) & (gap <= margin)).all()
        assert len(a) == int((valid & (all_gaps > 0) & (all_gaps <= margin)).sum())
    else:
        assert (gap <= 0).all() and len(a) == int((valid & (all_gaps <= 0)).sum())


def test_statistics_show_collapse():
    labels = torch.arange(4).repeat_interleave(3)
    collapsed = batch_statistics(torch.ones(12, 8), labels, 0.2, None)
    assert collapsed["dim_std"] < 1e-6 and collapsed["neg_cos"] > 0.999 and collapsed["active"] == 1.0
    spread = batch_statistics(torch.eye(12)[:, :12], labels, 0.2, None)
    assert spread["neg_cos"] == pytest.approx(0.0) and spread["dim_std"] > 0.2


# ------------------------------------------------------------------------------------------------ loop


def _state(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(run / "checkpoints" / "last.safetensors"))


def test_an_epoch_without_validation_says_why_when_lfw_was_not_found(cache: FaceCache, tmp_path: Path, monkeypatch):
    from faceverify.train.loop import Trainer

    monkeypatch.delenv("FACEVERIFY_LFW", raising=False)
    said: dict[str, list[str]] = {}
    for root in ("", "none"):
        cfg = tiny_config(cache.dir, tmp_path / f"run-{root or 'find'}", validation=dict(lfw_root=root),
                          run=dict(epochs=1, steps_per_epoch=1))
        said[root] = []
        Trainer(config_from_dict(cfg), echo=said[root].append).run()
    assert any("no validation (LFW not found: set $FACEVERIFY_LFW" in m for m in said[""]), said[""]
    assert any("no validation (the latest epoch" in m for m in said["none"]), said["none"]  # switched off: no hint


def test_resume_continues_exactly(cache: FaceCache, tmp_path: Path):
    from faceverify.train.loop import Trainer

    calls: list[tuple[int, int, dict]] = []
    straight = Trainer(config_from_dict(tiny_config(cache.dir, tmp_path / "a")), echo=lambda _m: None)
    straight.run(stop_after=5, progress=lambda done, total, info: calls.append((done, total, info)))  # crosses an epoch
    assert [c[:2] for c in calls] == [(0, 3), (1, 3), (2, 3), (3, 3), (0, 3), (1, 3), (2, 3)]
    assert calls[0][2] == dict(epoch=1, epochs=2, loss=None) and calls[4][2]["epoch"] == 2
    assert all(isinstance(c[2]["loss"], float) for c in calls[1:4])
    first = Trainer(config_from_dict(tiny_config(cache.dir, tmp_path / "b")), echo=lambda _m: None)
    first.run(stop_after=2)
    # as an older checkpoint: no scheduler's initial_lr in the optimiser groups, the retired validation.batch_size
    last = tmp_path / "b" / "checkpoints" / "last.json"
    meta = json.loads(last.read_text())
    for group in meta["optimizer"]["param_groups"]:
        del group["initial_lr"]
    meta["config"]["validation"]["batch_size"] = 64
    last.write_text(json.dumps(meta))
    second = Trainer(config_from_dict(tiny_config(cache.dir, tmp_path / "b")), echo=lambda _m: None)
    assert second.resume() and second.state.global_step == 2
    second.run(stop_after=5)
    a, b = _state(tmp_path / "a"), _state(tmp_path / "b")
    assert a.keys() == b.keys() and any(k.startswith("optim.") for k in a) and any("memory" in k for k in a)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    meta_a = json.loads((tmp_path / "a" / "checkpoints" / "last.json").read_text())
    meta_b = json.loads((tmp_path / "b" / "checkpoints" / "last.json").read_text())
    assert meta_a["state"] == meta_b["state"] and meta_a["memory"] == meta_b["memory"]
    steps = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert {"loss", "active", "dim_std", "neg_cos", "images_per_s", "lr"} <= set(steps[0])


def test_ddp_with_two_cpu_processes(cache: FaceCache, tmp_path: Path):
    """torchrun with two gloo processes: each rank trains on its own batches and ends with the same weights."""
    script = tmp_path / "ddp_child.py"
    script.write_text(TINY_NET + textwrap.dedent('''
        import os, sys
        import torch.distributed as dist
        from safetensors.torch import save_file
        from faceverify.train.config import load_config
        from faceverify.train.checkpoint import weights_of
        from faceverify.train.loop import Trainer
        from faceverify.train.setup import init_distributed

        info = init_distributed()
        trainer = Trainer(load_config(sys.argv[1]), info, echo=lambda _m: None)
        trainer.run()
        save_file(weights_of(trainer.network), sys.argv[2] + f"/rank{info.rank}.safetensors")
        dist.destroy_process_group()
    '''))
    config = tmp_path / "ddp.json"
    config.write_text(json.dumps(tiny_config(cache.dir, tmp_path / "run", run=dict(epochs=1, steps_per_epoch=2),
                                             objective=dict(memory_size=0))))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
           str(config), str(tmp_path)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    from safetensors.torch import load_file

    r0, r1 = load_file(str(tmp_path / "rank0.safetensors")), load_file(str(tmp_path / "rank1.safetensors"))
    assert all(torch.equal(r0[k], r1[k]) for k in r0)
    meta = json.loads((tmp_path / "run" / "checkpoints" / "last.json").read_text())
    assert meta["world_size"] == 2 and meta["state"]["global_step"] == 2


def test_export_round_trip(cache: FaceCache, tmp_path: Path, monkeypatch, dataset: Path):
    """Validation picks the best epoch on a folded pair file; the export reloads through Embedder unchanged."""
    from safetensors.torch import load_file

    from faceverify.embed import Embedder
    from faceverify.train.export import export_run
    from faceverify.train.loop import train

    rows = [f"person_0{k}/img_0.png\tperson_0{k}/img_{j}.png\t1\t{j % 2}" for k in range(2, 6) for j in (2, 3)]
    rows += [f"person_0{k}/img_0.png\tperson_0{k + 1}/img_2.png\t0\t{k % 2}" for k in range(2, 5)]
    rows += ["person_02/img_4.png\tperson_05/img_4.png\t0\t1"]
    pairs = dataset / "pairs.txt"  # beside the images: relative paths in a pair file start at its directory
    pairs.write_text("\n".join(rows) + "\n")
    cfg = config_from_dict(tiny_config(cache.dir, tmp_path / "run", validation=dict(lfw_root="none", pairs=str(pairs))))
    result = train(cfg, echo=lambda _m: None)
    best = json.loads((tmp_path / "run" / "checkpoints" / "best.json").read_text())
    assert best["validation"]["protocol"] == "pairs:pairs.txt" and result["best_epoch"] == best["state"]["best_epoch"]
    monkeypatch.setenv("FACEVERIFY_MODELS", str(tmp_path / "models"))
    card_path = export_run(tmp_path / "run", "tiny-exported", lfw_root=None, device="cpu", notes="test model")
    card = json.loads(card_path.read_text())
    assert card["thresholds"] and card["provenance"]["init"].startswith("random")
    assert card["front_end"]["calibrated"]["detector"] == card["front_end"]["trained"]["detector"] == cache.detector_kind
    embedder = Embedder.load("tiny-exported", "cpu")
    network = networks.build("tiny_test_net", 16)
    network.load_state_dict({k[6:]: v for k, v in load_file(str(tmp_path / "run" / "checkpoints" / "best.safetensors")).items()})
    crops = np.array(cache.crops(SIZE)[:10])
    with torch.no_grad():
        x = (torch.from_numpy(crops).permute(0, 3, 1, 2).float() - 127.5) / 128.0
        expected = torch.nn.functional.normalize(network.eval()(x), dim=1).numpy()
    assert np.allclose(embedder.embed(crops), expected, atol=1e-6)

    # the exported model teaches a fresh student: the distill term falls and the student's embeddings turn to it
    from faceverify.train.loop import Trainer

    student_cfg = tiny_config(cache.dir, tmp_path / "student", seed=11, run=dict(epochs=1, steps_per_epoch=25),
                              objective=dict(teacher="tiny-exported", memory_size=0,
                                             losses=[dict(type="distill", temperature=0.1)]),
                              augment=dict(erase=0.0, blur=0.0), optim=dict(lr=1e-2))
    student = Trainer(config_from_dict(student_cfg), echo=lambda _m: None)
    assert np.allclose(student.teacher.numpy(), embedder.embed(np.array(cache.crops(SIZE))), atol=1e-5)
    (stored,) = cache.dir.glob("teacher-tiny-exported-*.npy")  # kept for later runs; a damaged copy is redone
    stored.write_bytes(b"not an array")
    again = Trainer(config_from_dict({**student_cfg, "run": {**student_cfg["run"], "out": str(tmp_path / "again")}}),
                    echo=lambda _m: None)
    assert torch.equal(again.teacher, student.teacher) and np.load(stored).shape == tuple(student.teacher.shape)
    before = _agreement(student.network, crops, embedder.embed(crops))
    student.run()
    steps = [json.loads(line) for line in (tmp_path / "student" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss_distill"] for r in steps if r["kind"] == "step"]
    assert np.mean(losses[-5:]) < 0.85 * np.mean(losses[:5])
    assert _agreement(student.network, crops, embedder.embed(crops)) > max(before, 0.0) + 0.3
    meta = json.loads((tmp_path / "student" / "checkpoints" / "best.json").read_text())
    assert meta["config"]["objective"]["teacher"] == "tiny-exported"


def _agreement(network: nn.Module, crops: np.ndarray, target: np.ndarray) -> float:
    """Mean cosine between a network's embeddings of ``crops`` and ``target``."""
    with torch.no_grad():
        x = (torch.from_numpy(crops).permute(0, 3, 1, 2).float() - 127.5) / 128.0
        z = torch.nn.functional.normalize(network.eval()(x), dim=1).numpy()
    network.train()
    return float((z * target).sum(1).mean())


def test_distillation_loss_aligns_a_student():
    """InfoNCE against the teacher's embeddings of the same items plus cosine distance: the student learns to
    point each item at its own teacher embedding, not at the others'."""
    from faceverify.train.objective import distillation_loss

    torch.manual_seed(0)
    x, labels = _toy_clusters(per_class=6)
    teacher = torch.nn.functional.normalize(torch.tanh(x @ torch.randn(8, 16)), dim=1)
    cfg = ObjectiveConfig(losses=[LossConfig("distill", temperature=0.1)], miner="none", teacher="t")
    objective = Objective(cfg, 16)
    head = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 16))
    opt = torch.optim.Adam(head.parameters(), lr=0.01)
    first = None
    for _ in range(300):
        loss, stats = objective(head(x), labels, teacher)
        first = first if first is not None else stats["loss_distill"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    z = torch.nn.functional.normalize(head(x), dim=1).detach()
    assert stats["loss_distill"] < 0.5 * first
    assert (z * teacher).sum(1).mean() > 0.85
    assert ((z @ teacher.T).argmax(1) == torch.arange(len(z))).float().mean() > 0.9
    assert float(distillation_loss(teacher * 5, teacher, 0.1)) < float(distillation_loss(teacher.flip(0), teacher, 0.1))
    with pytest.raises(ValueError, match="teacher"):
        objective(head(x), labels)


def test_relation_loss_holds_the_scores_and_lets_the_embeddings_turn():
    """The relation term compares cosines between items, not embeddings: a rotated copy of the teacher's embeddings
    costs nothing there (and much in the distill term), a shuffled one costs; with ``plain`` only those rows count."""
    from faceverify.train.objective import distillation_loss, relation_loss

    torch.manual_seed(0)
    x, labels = _toy_clusters(per_class=6)
    teacher = torch.nn.functional.normalize(torch.tanh(x @ torch.randn(8, 16)), dim=1)
    rotated = teacher @ torch.linalg.qr(torch.randn(16, 16))[0]
    assert float(relation_loss(rotated, teacher)) < 1e-5
    assert float(distillation_loss(rotated, teacher, 0.1)) > 1.0
    shuffled = teacher[torch.randperm(len(teacher))]
    assert float(relation_loss(shuffled, teacher)) > 0.1
    cfg = ObjectiveConfig(losses=[LossConfig("relation")], miner="none", teacher="t")
    objective = Objective(cfg, 16)
    plain = torch.zeros(len(x), dtype=torch.bool)
    plain[:6] = True
    student = torch.cat([rotated[:6], shuffled[6:]])
    assert objective(student, labels, teacher, plain)[1]["loss_relation"] < 1e-5
    assert objective(student, labels, teacher)[1]["loss_relation"] > 0.05
    with pytest.raises(ValueError, match="teacher"):
        objective(student, labels)


def test_distill_anchors_only_the_rows_it_is_given():
    """With ``anchored`` the distill term pulls only those rows toward the teacher: the others get no gradient
    from it, and the value is the term over the anchored rows alone (nothing anchored: 0)."""
    from faceverify.train.objective import distillation_loss

    torch.manual_seed(0)
    x, labels = _toy_clusters(per_class=6)
    teacher = torch.nn.functional.normalize(torch.tanh(x @ torch.randn(8, 16)), dim=1)
    student = torch.randn(len(x), 16, requires_grad=True)
    anchored = torch.arange(len(x)) % 3 == 0
    objective = Objective(ObjectiveConfig(losses=[LossConfig("distill", temperature=0.1)], miner="none", teacher="t"), 16)
    loss, stats = objective(student, labels, teacher, anchored=anchored)
    loss.backward()
    with torch.no_grad():
        alone, every = distillation_loss(student[anchored], teacher[anchored], 0.1), distillation_loss(student, teacher, 0.1)
    assert stats["loss_distill"] == pytest.approx(float(alone)) and stats["loss_distill"] != pytest.approx(float(every), abs=1e-3)
    assert float(student.grad[~anchored].abs().max()) == 0.0 and float(student.grad[anchored].abs().min()) > 0
    nothing = torch.zeros(len(x), dtype=torch.bool)
    assert objective(student, labels, teacher, anchored=nothing)[1]["loss_distill"] == 0.0


def test_collapsed_model_gets_no_unreachable_threshold(cache: FaceCache):
    """When impostors score a cosine of 1, no threshold reaches the FAR: it is dropped, not written as 1.000001."""
    from types import SimpleNamespace

    from faceverify.modelcard import ModelCard
    from faceverify.pipeline import FaceEmbedding, ImageResult
    from faceverify.train.export import calibrate_on_cache

    class Collapsed:
        card = SimpleNamespace(embedding_size=4)

        def process_paths(self, paths, face="largest", fallback="none", batch_size=16):
            for p in paths:
                yield ImageResult(str(p), [FaceEmbedding(None, np.array([1, 0, 0, 0], np.float32))])

    thresholds, record = calibrate_on_cache(Collapsed(), cache)  # type: ignore[arg-type]
    assert thresholds == {} and "1e-2" in record["unreachable_fars"]
    card = ModelCard("c", "tiny_test_net", SIZE, cache.template(SIZE), [0.0] * 3, [1.0] * 3, 4, "c.safetensors",
                     "0" * 64, thresholds=thresholds, calibration=record)
    card.validate()


# ------------------------------------------------------------------------------------------- backbones


@pytest.mark.parametrize("name,size,batch", [("mobilefacenet", 112, 4), ("dlib_resnet_v1", 150, 2)])
def test_backbone_forward_backward(name: str, size: int, batch: int):
    torch.manual_seed(0)
    net = networks.build(name, 128).train()
    out = net(torch.randn(batch, 3, size, size))
    assert out.shape == (batch, 128)
    out.pow(2).mean().backward()
    groups = net.stage_groups()
    assert sum(len(g) for g in groups) == len(list(net.parameters())) and all(p.grad is not None for p in groups[0])
    if name == "mobilefacenet":
        assert 0.9e6 < sum(p.numel() for p in net.parameters()) < 1.2e6


def test_schedule_warms_up_then_decays_per_group_and_resumes_anywhere():
    from faceverify.train.setup import build_optimizer, build_schedule, lr_factor

    cfg = config_from_dict({"data": {"cache": "x"}, "model": {"architecture": "tiny_test_net"},
                            "optim": {"lr": 2e-3, "body_lr_scale": 0.1, "warmup_steps": 3, "min_lr_ratio": 0.05}})
    net = networks.build("tiny_test_net", 16)
    optimizer = build_optimizer(net, cfg)
    schedule = build_schedule(optimizer, cfg, total_steps=10)
    seen = []
    for step in range(12):
        factor = lr_factor(step, 10, 3, 0.05)
        assert [g["lr"] for g in optimizer.param_groups] == [2e-3 * g["lr_scale"] * factor for g in optimizer.param_groups]
        seen.append(optimizer.param_groups[-1]["lr"])
        optimizer.step()
        schedule.step()
    assert seen[0] == pytest.approx(2e-3 / 3) and seen[2] == seen[3] == pytest.approx(2e-3)
    assert seen[-1] == seen[-2] == pytest.approx(1e-4) and all(a >= b for a, b in zip(seen[2:], seen[3:]))
    again = build_optimizer(networks.build("tiny_test_net", 16), cfg)
    build_schedule(again, cfg, total_steps=10, start=7)
    assert [g["lr"] for g in again.param_groups] == [2e-3 * g["lr_scale"] * lr_factor(7, 10, 3, 0.05) for g in again.param_groups]


def test_frozen_stages_and_body_rate():
    from faceverify.train.setup import param_groups

    net = networks.build("dlib_resnet_v1", 128)
    cfg = config_from_dict({"data": {"cache": "x"}, "model": {"architecture": "dlib_resnet_v1"},
                            "optim": {"freeze_stages": 2, "body_lr_scale": 0.1, "lr": 1e-3}})
    groups = param_groups(net, cfg)
    stages = net.stage_groups()
    assert not any(p.requires_grad for g in stages[:2] for p in g)
    assert {g["stage"] for g in groups} == set(range(2, len(stages)))
    assert all(g["lr"] == pytest.approx(1e-3 if g["stage"] == len(stages) - 1 else 1e-4) for g in groups)


def test_edgeface_stage_groups_freeze_all_but_the_head():
    from faceverify.train.setup import param_groups

    net = networks.build("edgeface_xs", 512)
    stages = net.stage_groups()  # stem, four EdgeNeXt stages, head
    assert len(stages) == 6 and [id(p) for g in stages for p in g] == [id(p) for p in net.parameters()]
    assert stages[-1][-1] is net.model.head.fc.bias
    cfg = config_from_dict({"data": {"cache": "x"}, "model": {"architecture": "edgeface_xs", "embedding_size": 512},
                            "optim": {"freeze_stages": 5}})
    groups = param_groups(net, cfg)
    assert {g["stage"] for g in groups} == {5}
    assert [p.requires_grad for p in net.parameters()] == [any(p is q for q in stages[-1]) for p in net.parameters()]


def test_train_stages_leave_the_output_side_as_it_is():
    """``train_stages``: only the input-side groups learn (the last of them at the full rate), the rest, head
    included, are frozen; with ``freeze_stages`` the window starts later; a window holding nothing is refused."""
    from faceverify.train.setup import param_groups

    net = networks.build("edgeface_xxs", 512)
    stages = net.stage_groups()
    cfg = config_from_dict({"data": {"cache": "x"}, "model": {"architecture": "edgeface_xxs", "embedding_size": 512},
                            "optim": {"train_stages": 3, "freeze_stages": 1, "body_lr_scale": 0.5, "lr": 1e-3}})
    groups = param_groups(net, cfg)
    assert {g["stage"] for g in groups} == {1, 2}
    assert all(g["lr"] == pytest.approx(1e-3 if g["stage"] == 2 else 5e-4) for g in groups)
    learning = {id(p) for g in stages[1:3] for p in g}
    assert [p.requires_grad for p in net.parameters()] == [id(p) in learning for p in net.parameters()]
    cfg.optim.freeze_stages = 3
    with pytest.raises(FaceverifyError, match="would freeze all"):
        param_groups(networks.build("edgeface_xxs", 512), cfg)
    with pytest.raises(FaceverifyError, match="train_stages must be >= 0"):
        config_from_dict({"data": {"cache": "x"}, "optim": {"train_stages": -1}})


def test_shipped_configs_load():
    configs = sorted((REPO / "faceverify" / "configs").glob("*.toml"))
    assert configs
    for path in configs:
        cfg = load_config(path, ["run.epochs=1", "optim.lr=0.01", "data.images=people"])
        assert cfg.run.epochs == 1 and cfg.optim.lr == 0.01
    bundled = load_config("mobilefacenet-folders", ["data.images=people"])
    assert bundled == load_config(REPO / "faceverify" / "configs" / "mobilefacenet-folders.toml", ["data.images=people"])
    with pytest.raises(Exception, match="bundled: .*mobilefacenet-folders"):
        load_config("no-such-config")
    with pytest.raises(Exception, match="unknown key"):
        config_from_dict({"data": {"cache": "x", "batchsize": 3}})
    with pytest.raises(Exception, match="unknown key"):  # retired: a config may not set it ...
        config_from_dict({"data": {"cache": "x"}, "validation": {"batch_size": 64}})
    from faceverify.train.config import stored_config  # ... but the checkpoints that recorded it still load

    assert stored_config({"data": {"cache": "x"}, "validation": {"batch_size": 64}}) == config_from_dict({"data": {"cache": "x"}})
    with pytest.raises(Exception, match="objective.teacher"):
        config_from_dict({"data": {"cache": "x"}, "objective": {"losses": [{"type": "distill"}]}})
    with pytest.raises(Exception, match="objective.teacher"):
        config_from_dict({"data": {"cache": "x"}, "objective": {"teacher": "dlib-resnet-v1"}})
