"""The training objective: weighted pytorch-metric-learning losses, a miner, an optional memory bank, and the
statistics that make collapse visible.

All similarities are cosine (``CosineSimilarity``), the measure `verify` decides on, so margins are in cosine
units. The miner feeds the triplet term; the supervised-contrastive term uses every pair of the batch. With
``memory_size`` > 0 each term is wrapped in a ``CrossBatchMemory`` so that it also sees the embeddings of recent
batches (the triplet term mining among them). The ``ntxent`` term (NT-Xent / InfoNCE, for label-free adaptation,
where a label is one face or one track) drops the negatives that look like the same person
(:class:`FalseNegativeFilter`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from pytorch_metric_learning import losses, miners
from pytorch_metric_learning.distances import CosineSimilarity
from pytorch_metric_learning.miners import BaseMiner
from pytorch_metric_learning.utils import loss_and_miner_utils as lmu
from torch import nn

from .config import TEACHER_LOSSES, LossConfig, ObjectiveConfig


def build_miner(cfg: ObjectiveConfig) -> nn.Module | None:
    """The configured miner (None for "none": the triplet term then uses every triplet of the batch)."""
    distance = CosineSimilarity()
    if cfg.miner == "none":
        return None
    if cfg.miner == "batch_hard":
        return miners.BatchHardMiner(distance=distance)
    if cfg.miner == "multi_similarity":
        return miners.MultiSimilarityMiner(epsilon=cfg.ms_epsilon, distance=distance)
    return miners.TripletMarginMiner(margin=cfg.miner_margin, type_of_triplets=cfg.miner, distance=distance)


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Contrastive distillation: InfoNCE over the batch with the teacher's embedding of the same image as the
    positive (the other images' as negatives), plus the mean cosine distance to it. ``teacher`` is L2-normalised;
    no rows: 0."""
    if len(student) == 0:
        return student.sum()
    z = F.normalize(student, dim=1)
    logits = z @ teacher.T / temperature
    target = torch.arange(len(z), device=z.device)
    return F.cross_entropy(logits, target) + (1 - (z * teacher).sum(1)).mean()


def relation_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Similarity-preserving distillation: the mean absolute difference, in cosine units, between the student's
    cosine of every two images of the batch and the teacher's (``teacher`` L2-normalised). The embeddings may
    turn; the scores, which thresholds are read against, stay the teacher's."""
    if len(student) < 2:
        return student.new_zeros(())
    z = F.normalize(student, dim=1)
    off = ~torch.eye(len(z), dtype=torch.bool, device=z.device)
    return (z @ z.T - teacher @ teacher.T)[off].abs().mean()


class FalseNegativeFilter(BaseMiner):
    """Every positive pair, and the negative pairs whose cosine is below ``limit``: without labels, two faces of
    one person in different tracks (a repeated visitor) are labelled apart, and pushing them apart would teach the
    model to tell a person from themself; a pair the model already scores as the same person (``limit``: a
    calibrated threshold) is therefore neither pulled together nor pushed apart."""

    def __init__(self, limit: float):
        super().__init__()
        self.limit = limit

    def mine(self, embeddings: torch.Tensor, labels: torch.Tensor, ref_emb: torch.Tensor, ref_labels: torch.Tensor):
        a1, p, a2, n = lmu.get_all_pairs_indices(labels, ref_labels)
        with torch.no_grad():
            cos = F.normalize(embeddings, dim=1) @ F.normalize(ref_emb, dim=1).T
        keep = cos[a2, n] < self.limit
        return a1, p, a2[keep], n[keep]


def build_loss(cfg: LossConfig) -> nn.Module:
    if cfg.type == "triplet":
        return losses.TripletMarginLoss(margin=cfg.margin, distance=CosineSimilarity())
    if cfg.type == "ntxent":
        return losses.NTXentLoss(temperature=cfg.temperature, distance=CosineSimilarity())
    return losses.SupConLoss(temperature=cfg.temperature, distance=CosineSimilarity())


class Objective(nn.Module):
    """``forward(embeddings, labels) -> (loss, stats)``; ``stats`` are floats for the metrics log."""

    def __init__(self, cfg: ObjectiveConfig, embedding_size: int):
        super().__init__()
        self.cfg = cfg
        self.miner = build_miner(cfg)
        self.weights = [spec.weight for spec in cfg.losses]
        self.kinds = [spec.type for spec in cfg.losses]
        triplet_margins = [spec.margin for spec in cfg.losses if spec.type == "triplet"]
        self.stat_margin = triplet_margins[0] if triplet_margins else cfg.miner_margin
        self.negatives = FalseNegativeFilter(cfg.false_negative_cos)
        terms = []
        for spec in cfg.losses:
            if spec.type in TEACHER_LOSSES:
                terms.append(nn.Identity())  # computed from the teacher's embeddings; a placeholder keeps terms aligned
                continue
            loss = build_loss(spec)
            if cfg.memory_size > 0:
                miner = {"triplet": self.miner, "ntxent": self.negatives}.get(spec.type)
                loss = losses.CrossBatchMemory(loss, embedding_size, memory_size=cfg.memory_size, miner=miner)
            terms.append(loss)
        self.terms = nn.ModuleList(terms)

    def forward(
        self, embeddings: torch.Tensor, labels: torch.Tensor, teacher: torch.Tensor | None = None,
        plain: torch.Tensor | None = None, anchored: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """``teacher``: the teacher's normalised embeddings of the same images (needed by a distill or relation
        term); ``plain``: the rows seen without augmentation, the only ones a relation term compares;
        ``anchored``: the only rows a distill term pulls toward the teacher (None: every row)."""
        embeddings = embeddings.float()
        mined = self.miner(embeddings, labels) if self.miner is not None else None
        total = embeddings.new_zeros(())
        stats: dict[str, float] = {}
        for kind, weight, term, spec in zip(self.kinds, self.weights, self.terms, self.cfg.losses):
            if kind in TEACHER_LOSSES:
                if teacher is None:
                    raise ValueError(f"a {kind} term needs the teacher's embeddings")
                rows = anchored if kind == "distill" else plain
                student, target = (embeddings, teacher) if rows is None else (embeddings[rows], teacher[rows])
                if kind == "distill":
                    value = distillation_loss(student, target, spec.temperature)
                else:
                    value = relation_loss(student, target)
            elif isinstance(term, losses.CrossBatchMemory):
                value = term(embeddings, labels)
            elif kind == "ntxent":
                value = term(embeddings, labels, self.negatives(embeddings, labels))
            else:
                value = term(embeddings, labels, mined if kind == "triplet" else None)
            stats[f"loss_{kind}"] = float(value.detach())
            total = total + weight * value
        stats.update(batch_statistics(embeddings.detach(), labels, self.stat_margin, mined))
        return total, stats

    def memory_state(self) -> dict[str, Any]:
        """The memory banks' positions (their contents are buffers, saved with the state dict)."""
        return {
            str(i): dict(queue_idx=int(t.queue_idx), has_been_filled=bool(t.has_been_filled))
            for i, t in enumerate(self.terms)
            if isinstance(t, losses.CrossBatchMemory)
        }

    def load_memory_state(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            term = self.terms[int(key)]
            term.queue_idx, term.has_been_filled = value["queue_idx"], value["has_been_filled"]


def batch_statistics(
    embeddings: torch.Tensor, labels: torch.Tensor, margin: float, mined: tuple[torch.Tensor, ...] | None
) -> dict[str, float]:
    """Collapse and difficulty on one batch (cosine similarities of L2-normalised embeddings).

    ``active``: fraction of all valid triplets (a, p, n) of the batch with ``s(a,n) - s(a,p) + margin > 0``;
    ``active_mined`` and ``mined``: the same over, and the number of, the miner's triplets; ``pos_cos`` /
    ``neg_cos``: mean same- / different-identity cosine; ``dim_std``: mean per-dimension standard deviation
    (about ``1/sqrt(D)`` for embeddings spread over the sphere, 0 when collapsed).
    """
    z = F.normalize(embeddings, dim=1)
    sim = z @ z.T
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(z), dtype=torch.bool, device=z.device)
    pos, neg = same & ~eye, ~same
    active = valid = 0
    for start in range(0, len(z), 64):  # [a, p, n] = s(a,n) - s(a,p) + margin, 64 anchors at a time
        rows = slice(start, start + 64)
        violation = sim[rows, None, :] - sim[rows, :, None] + margin
        ok = pos[rows, :, None] & neg[rows, None, :]
        active += int(((violation > 0) & ok).sum())
        valid += int(ok.sum())
    out = dict(
        active=active / max(valid, 1),
        pos_cos=float(sim[pos].mean()) if pos.any() else float("nan"),
        neg_cos=float(sim[neg].mean()) if neg.any() else float("nan"),
        dim_std=float(z.std(0).mean()),
    )
    if mined is not None:
        a, p, n = lmu.convert_to_triplets(mined, labels)
        out["mined"] = float(len(a))
        out["active_mined"] = float((sim[a, n] - sim[a, p] + margin > 0).float().mean()) if len(a) else 0.0
    return out
