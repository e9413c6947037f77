"""Time one training step of the `small` preset, split into forward (loss), backward and optimiser step.

Builds the preset's model (pretrained MiniLM encoder and MiniLM causal decoder), draws micro-batches of
``--batch`` training sequences from a prepared folder (seeded), and times ``LogLLM.loss``, ``backward``
and the AdamW step over ``--steps`` steps after ``--warmup`` untimed ones. ``--parts`` says which parts
train, as a stage's ``trainable`` does; when the encoder is not among them its vectors come from the
cache, as in stages 1 and 2a. Prints the mean seconds of each phase and of a whole step.

    .venv/bin/python benchmarks/bench_step.py --data out/hdfs_2pct --threads 2
    .venv/bin/python benchmarks/bench_step.py --data out/hdfs_2pct --threads 2 --parts projector decoder

This is for finding where a step's time goes; the speed of whole trainings is in bench_model.py.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="prepared folder (logllm prepare)")
    parser.add_argument("--parts", nargs="+", default=["encoder", "projector", "decoder"],
                        choices=("encoder", "projector", "decoder"), help="the parts that train (stage 3: all)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--decoder", default=None, help="model.decoder (default: the preset's)")
    parser.add_argument("--decoder-lora", choices=("preset", "none", "qv"), default="preset",
                        help="decoder LoRA: the preset's, none (full fine-tuning) or r=8 on q/v projections")
    parser.add_argument("--distinct", action="store_true",
                        help="draw each micro-batch from distinct (sequence, label) pairs, as distinct_samples does")
    parser.add_argument("--autocast", choices=("none", "bfloat16", "auto"), default=None,
                        help="mixed precision of the forward pass (default: the preset's)")
    args = parser.parse_args()

    import tempfile

    import numpy as np
    import torch

    from logllm.config import apply_overrides, preset
    from logllm.training.trainer import Trainer

    # The trainer sets the step up as training does: threads, model from the seed, the stage's parts
    # unfrozen and the rest frozen, the encoder cache when the encoder is frozen, fused AdamW.
    overrides = {"seed": args.seed, "threads": args.threads, "checkpoint_every": 0, "micro_batch": args.batch,
                 "grad_accum": 1, "stages": [{"name": "3", "trainable": args.parts}]}
    if args.autocast is not None:
        overrides["autocast"] = args.autocast  # "none" as in a config file
    model_overrides: dict = {}
    if args.decoder is not None:
        model_overrides["decoder"] = args.decoder
    if args.decoder_lora != "preset":
        model_overrides["decoder_lora"] = None if args.decoder_lora == "none" else {"r": 8, "alpha": 16, "dropout": 0.1}
    if model_overrides:
        overrides["model"] = model_overrides
    overrides["distinct_samples"] = args.distinct
    config = apply_overrides(preset("small"), overrides).validate()
    run = tempfile.TemporaryDirectory()  # setup() writes the run folder (config, data manifest)
    trainer = Trainer(config, args.data, Path(run.name) / "run", progress=False)
    trainer.setup()
    trainer.start_stage(config.stage("3"))
    model, optimizer, texts = trainer.model, trainer.optimizer, trainer.texts
    sequences, labels = trainer.train_ids, trainer.train_labels
    pool = trainer.samples  # distinct pairs with --distinct, else the oversampled samples
    model.train()
    rng = np.random.default_rng(args.seed)

    def step() -> tuple[float, float, float]:
        batch = rng.choice(pool, args.batch, replace=False)
        optimizer.zero_grad()
        t0 = time.perf_counter()
        with trainer.autocast():
            loss = model.loss(texts, [sequences[i] for i in batch], [int(labels[i]) for i in batch])
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        optimizer.step()
        return t1 - t0, t2 - t1, time.perf_counter() - t2

    for _ in range(args.warmup):
        step()
    times = [step() for _ in range(args.steps)]
    fwd, bwd, opt = (statistics.fmean(t[k] for t in times) for k in range(3))
    print(f"parts {'+'.join(args.parts)}, batch {args.batch}, threads {torch.get_num_threads()}, "
          f"autocast {trainer.autocast_name}, "
          f"{args.steps} steps: "
          f"forward {fwd:.3f} s, backward {bwd:.3f} s, optimiser {opt:.3f} s, step {fwd + bwd + opt:.3f} s")


if __name__ == "__main__":
    main()
