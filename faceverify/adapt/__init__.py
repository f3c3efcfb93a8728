"""`faceverify adapt`: self-supervised contrastive adaptation of a shipped model to a camera, from faces nobody
labelled (:mod:`.faces` gathers them, :mod:`.run` trains)."""
