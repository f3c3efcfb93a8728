"""Training: a face cache built with the shipped front end, batch sampling and on-device augmentation,
metric-learning objectives from pytorch-metric-learning, a training loop with checkpoints, and export to a
model card.

    prepare  -> :mod:`faceverify.train.prepare`   (identity folders -> aligned uint8 crops, memory-mapped)
    data     -> :mod:`faceverify.train.data`      (m-per-class batches + singletons, batch augmentation)
    objective-> :mod:`faceverify.train.objective` (losses, miner, memory bank, collapse statistics)
    loop     -> :mod:`faceverify.train.loop`      (optimiser, AMP, DDP, checkpoints, per-epoch validation)
    export   -> :mod:`faceverify.train.export`    (best checkpoint -> models/<name>.safetensors + card)
"""
