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
    args = parser.parse_args()

    import numpy as np
    import torch

    from logllm.config import preset
    from logllm.data.dataset import PreparedData
    from logllm.model.logllm import LogLLM
    from logllm.training.trainer import make_adamw

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = LogLLM.build(preset("small").model, seed=args.seed)
    model.train()
    data = PreparedData(args.data)
    train = data.sequences("train")
    sequences = [ids.tolist() for ids in train.message_ids]
    labels = train.labels.astype(int)
    for p in model.parameters():  # as a stage does: everything frozen but its parts
        p.requires_grad_(False)
    params = [p for name, part in model.parts().items() if name in args.parts for p in part]
    for p in params:
        p.requires_grad_(True)
    if "encoder" not in args.parts:
        model.freeze_encoder_cache(data.messages)
    optimizer = make_adamw(params, lr=5e-5, weight_decay=0.01)
    rng = np.random.default_rng(args.seed)

    def step() -> tuple[float, float, float]:
        batch = rng.choice(len(sequences), args.batch)
        optimizer.zero_grad()
        t0 = time.perf_counter()
        loss = model.loss(data.messages, [sequences[i] for i in batch], [int(labels[i]) for i in batch])
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        optimizer.step()
        return t1 - t0, t2 - t1, time.perf_counter() - t2

    for _ in range(args.warmup):
        step()
    times = [step() for _ in range(args.steps)]
    fwd, bwd, opt = (statistics.fmean(t[k] for t in times) for k in range(3))
    print(f"parts {'+'.join(args.parts)}, batch {args.batch}, threads {torch.get_num_threads()}, {args.steps} steps: "
          f"forward {fwd:.3f} s, backward {bwd:.3f} s, optimiser {opt:.3f} s, step {fwd + bwd + opt:.3f} s")


if __name__ == "__main__":
    main()
