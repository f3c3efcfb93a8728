"""Kept so that ``faceverify.metrics`` keeps working: the metrics live in :mod:`faceverify.eval.metrics`."""

from .eval.metrics import (  # noqa: F401
    KFoldResult,
    accuracy_at,
    auc,
    best_threshold,
    eer,
    far_key,
    far_of_threshold,
    kfold_accuracy,
    open_set_identification,
    roc,
    tar_at_far,
    threshold_at_far,
    verification_report,
)
