"""Training: a face cache built with the shipped front end, batch sampling and on-device augmentation,
metric-learning objectives from pytorch-metric-learning, a training loop with checkpoints, and export to a
model card.

    prepare    -> :mod:`faceverify.train.prepare`    (identity folders -> aligned uint8 crops, memory-mapped)
    data       -> :mod:`faceverify.train.data`       (m-per-class batches + singletons, batch augmentation)
    objective  -> :mod:`faceverify.train.objective`  (losses, miner, memory bank, collapse statistics)
    setup      -> :mod:`faceverify.train.setup`      (DDP, device, network, teacher, parameter groups, schedule)
    checkpoint -> :mod:`faceverify.train.checkpoint` (safetensors + JSON checkpoints, resume checks)
    loop       -> :mod:`faceverify.train.loop`       (the Trainer: steps, AMP, logging, per-epoch validation)
    export     -> :mod:`faceverify.train.export`     (best checkpoint -> models/<name>.safetensors + card)
"""
