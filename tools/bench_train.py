"""Training throughput: images per second of full training steps (load from the face cache, augment on the
device, forward, losses and miner, backward, optimiser step) in steady state, for each given config (a file,
or the name of a bundled one).

    python tools/bench_train.py mobilefacenet-lfw dlib-finetune-lfw \
        [--steps 8] [--warmup 2] [--batch 64] [--threads 2] [--set KEY=VALUE ...] [--json]

The configs' face cache must exist (`faceverify prepare`). Warm-up steps are not timed; the median of the
timed steps is reported with the machine's load average, since other jobs on a shared machine slow it down.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script from anywhere: make the package importable
    sys.path.insert(0, str(REPO_ROOT))

from faceverify.train.config import load_config  # noqa: E402
from faceverify.train.loop import Trainer  # noqa: E402


def bench(config: Path, steps: int, warmup: int, overrides: list[str]) -> dict:
    """Median images/second over ``steps`` timed training steps after ``warmup`` untimed ones."""
    with tempfile.TemporaryDirectory() as out:
        cfg = load_config(config, [*overrides, f"run.out={json.dumps(out)}"])
        trainer = Trainer(cfg, echo=lambda _m: None)
        plan = trainer.batches.epoch(0)
        rates = []
        for k in range(warmup + steps):
            start = time.perf_counter()
            crops, labels, teacher = trainer.batch(plan[k % len(plan)])
            trainer.train_step(crops, labels, teacher)
            trainer.state.global_step += 1
            if k >= warmup:
                rates.append(len(labels) / (time.perf_counter() - start))
    return dict(
        config=str(config), architecture=cfg.model.architecture, input_size=trainer.card.input_size,
        batch_size=cfg.data.batch_size, device=str(trainer.device), threads=torch.get_num_threads(),
        images_per_s=round(statistics.median(rates), 2), min=round(min(rates), 2), max=round(max(rates), 2), steps=steps,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="+", type=Path, help="config files or bundled config names")
    parser.add_argument("--steps", type=int, default=8, help="timed steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--batch", type=int, help="override data.batch_size (singletons stay as configured)")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override KEY=VALUE")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = list(args.overrides) + ([f"data.batch_size={args.batch}"] if args.batch else [])
    results = [bench(c, args.steps, args.warmup, overrides) for c in args.configs]
    machine = dict(cpu=platform.processor() or platform.machine(), cpus=os.cpu_count(), load_average=os.getloadavg(),
                   torch=torch.__version__, cuda=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
    if args.json:
        print(json.dumps(dict(machine=machine, results=results)))
        return 0
    for r in results:
        print(f"{r['architecture']:<16} {r['input_size']}px batch {r['batch_size']:<4} on {r['device']} "
              f"({r['threads']} threads): {r['images_per_s']} images/s (min {r['min']}, max {r['max']}, {r['steps']} steps)")
    print(f"load average during the run: {', '.join(f'{x:.1f}' for x in machine['load_average'])} on {machine['cpus']} CPUs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
