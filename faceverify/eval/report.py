"""Evaluation reports (the dicts of :mod:`faceverify.eval.evaluate`) as aligned text lines for people."""

from __future__ import annotations

from typing import Any

__all__ = ["identification_lines", "verification_lines"]


def _aligned(head: str, rows: list[tuple[str, str]]) -> list[str]:
    width = max(len(k) for k, _ in rows) + 2
    return [head] + [f"{k:<{width}}{v}" for k, v in rows]


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


def _front_end_row(report: dict[str, Any]) -> list[tuple[str, str]]:
    """The detector the report was made through, and whether the card's thresholds were calibrated with it."""
    detector = report.get("detector")
    if detector is None:
        return []
    if report.get("calibrated_front_end") is False:
        measured = report.get("calibrated_detector") or "a front end the card does not name"
        return [("front end", f"{detector} (NOT the front end the card's thresholds were calibrated with: {measured})")]
    return [("front end", f"{detector} (the card's thresholds were calibrated with it)")]


def verification_lines(report: dict[str, Any]) -> list[str]:
    """A verification report as a heading and aligned ``name  value`` lines."""
    accuracy = _pct(report["accuracy"])
    if report["accuracy_std"] is not None:
        accuracy += f" ± {_pct(report['accuracy_std'])} over {len(report['fold_thresholds'])} folds"
    rows = [
        ("model", f"{report['model']} ({report['model_id']})"),
        *_front_end_row(report),
        ("accuracy", f"{accuracy} at threshold {report['threshold']:.4f} ({report['threshold_source']})"),
    ]
    card = report.get("at_card_threshold")
    if card is not None:
        rows.append((f"at card FAR={card['far']}", f"{_pct(card['accuracy'])} at threshold {card['threshold']:.4f} "
                                                   f"(TAR {_pct(card['tar'])}, measured FAR {_pct(card['achieved_far'])})"))
    rows += [("AUC", f"{report['auc']:.4f}"), ("EER", _pct(report["eer"]))]
    rows += [(f"TAR@FAR={k}", _pct(v)) for k, v in report["tar_at_far"].items()]
    head = (f"{report['protocol']}: {report['pairs']} pairs ({report['same']} same, {report['different']} different), "
            f"{report['images']} images, {report['no_face']} without a detected face (centre crop used)")
    return _aligned(head, rows)


def identification_lines(report: dict[str, Any]) -> list[str]:
    """An open-set identification report as a heading and aligned ``name  value`` lines."""
    rows = [("model", f"{report['model']} ({report['model_id']})"), *_front_end_row(report),
            ("rank-1", _pct(report["rank1"]))]
    for key, rate in report["dir_at_fpir"].items():
        thr = report["thresholds"][key]
        rows.append((f"DIR@FPIR={key}", "n/a" if thr is None else
                     f"{_pct(rate)} at threshold {thr:.4f} (measured FPIR {_pct(report['fpir'][key])})"))
    d = report.get("default_point")
    if d is not None:
        rows.append(("identify's default", f"threshold {d['threshold']:.4f} (FAR {d['far']:.1e} x {d['compared']} "
                     f"compared, FPIR bound {_pct(d['fpir_bound'])}): {d['named']} of {report['non_mated']} "
                     f"never-enrolled probes named (FPIR {_pct(d['fpir'])}), DIR {_pct(d['dir'])}"))
    rows += [("match", report["match"]), ("split", report["split"])]
    head = (f"{report['protocol']}: {report['gallery']} enrolled identities ({report['gallery_embeddings']} "
            f"embeddings), {report['mated']} mated and {report['non_mated']} never-enrolled probes; "
            f"{report['images']} images, {report['no_face']} without a detected face (centre crop used)")
    return _aligned(head, rows)
