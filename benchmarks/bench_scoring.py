"""Scoring throughput of a LogLLM model, encoder calls with and without the cache, and decoder efficiency.

Prints, for one split of a prepared folder (default: the test split of /tmp/logllm-shared/hdfs_2pct,
or synthetic HDFS-like sequences when that folder is absent):

- sequences/s of `LogLLM.score` end to end, with a cold message cache and with a warm one;
- encoder calls (texts run through the encoder) for: one per message occurrence (no cache, what the
  reference does), one per distinct message per batch, and ours (once per distinct message overall);
- the decoder forward's achieved FLOP rate as a fraction of this machine's float32 matmul rate,
  measured in the same run with a plain 2048x2048 matmul (best of several, before and after).

Decoder FLOPs are counted from the model, on real (unpadded) tokens only: 2 x (weights of every
linear layer in the decoder body) per token, plus causal attention (4 x layers x attention width x
n(n+1)/2 per sequence of n tokens), plus the LM head at the one scored position per sequence.

    .venv/bin/python benchmarks/bench_scoring.py [--data DIR] [--split test] [--model RUN_OR_DIR]
        [--preset small] [--batch-sizes 32,64,128,256] [--threads 1] [--seed 0] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from logllm.model import LogLLM, preset
from logllm.versions import library_versions

DEFAULT_DATA = Path("/tmp/logllm-shared/hdfs_2pct")


def matmul_rate(size: int = 2048, repeats: int = 7) -> tuple[float, float]:
    """Best float32 matmul rate of a size x size product in FLOP/s: (per wall second, per CPU second)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # warm-up
    wall = cpu = float("inf")
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        a @ b
        wall = min(wall, time.perf_counter() - w0)
        cpu = min(cpu, time.process_time() - c0)
    return 2 * size**3 / wall, 2 * size**3 / cpu


def _linear_weights(module: torch.nn.Module) -> list[tuple[str, int]]:
    out = []
    for name, m in module.named_modules():
        if isinstance(m, torch.nn.Linear):
            out.append((name, m.weight.numel()))
        elif type(m).__name__ == "Conv1D":  # GPT-2's linear layers
            out.append((name, m.weight.numel()))
    return out


def decoder_flops(model: LogLLM, lengths: list[int]) -> float:
    """Forward FLOPs of the decoder on sequences of ``lengths`` real tokens, logits at one position each."""
    dec = model.decoder.get_base_model() if hasattr(model.decoder, "get_base_model") else model.decoder
    head = dec.get_output_embeddings()
    head_name = next(n for n, m in dec.named_modules() if m is head)
    head_prefix = head_name.split(".")[0]
    body = sum(n for name, n in _linear_weights(dec) if not name.startswith(head_prefix))
    head_weights = sum(n for name, n in _linear_weights(dec) if name.startswith(head_prefix))
    cfg = dec.config
    layers = cfg.num_hidden_layers
    heads = cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    n = np.asarray(lengths, dtype=np.float64)
    attention = 4.0 * layers * heads * head_dim * (n * (n + 1) / 2).sum()
    return float(2.0 * body * n.sum() + attention + 2.0 * head_weights * len(lengths))


class DecoderTimer:
    """Wall and CPU seconds spent in the decoder's forward, and its FLOPs on the real (unmasked) tokens
    of each row, while ``with``-active (forward hooks on ``model.decoder``)."""

    def __init__(self, model: LogLLM) -> None:
        self.model = model
        self.wall = self.cpu = 0.0
        self.batches: list[list[int]] = []  # real tokens per row, per decoder call
        self._started = (0.0, 0.0)
        self._hooks: list = []

    @property
    def flops(self) -> float:
        return sum(decoder_flops(self.model, lengths) for lengths in self.batches)

    def _before(self, _module, _args, kwargs) -> None:
        self.batches.append(kwargs["attention_mask"].sum(dim=1).tolist())
        self._started = (time.perf_counter(), time.process_time())

    def _after(self, _module, _args, _output) -> None:
        self.wall += time.perf_counter() - self._started[0]
        self.cpu += time.process_time() - self._started[1]

    def __enter__(self) -> DecoderTimer:
        decoder = self.model.decoder
        self._hooks = [decoder.register_forward_pre_hook(self._before, with_kwargs=True),
                       decoder.register_forward_hook(self._after)]
        return self

    def __exit__(self, *exc: object) -> None:
        for hook in self._hooks:
            hook.remove()


def load_split(data: Path | None, split: str, seed: int) -> tuple[list[str], list[list[int]], str]:
    if data is not None and (data / "manifest.json").is_file():
        from logllm.data.dataset import PreparedData

        prepared = PreparedData(data)
        seqs = prepared.sequences(split)
        return prepared.messages, [list(map(int, m)) for m in seqs.message_ids], f"{data} ({split})"
    # HDFS-like synthetic stand-in: 32 templates, ~20 messages per session, repeats among sessions.
    rng = np.random.default_rng(seed)
    texts = [f"synthetic message {i} with value <*>" for i in range(32)]
    base = [list(rng.integers(0, 32, size=int(rng.integers(10, 30)))) for _ in range(500)]
    sequences = [base[int(i)] for i in rng.integers(0, 500, size=2300)]
    return texts, sequences, f"synthetic (32 messages, 2300 sequences, 500 distinct, seed {seed})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA if (DEFAULT_DATA / "READY").is_file() else None)
    parser.add_argument("--split", default="test")
    parser.add_argument("--model", type=Path, default=None, help="saved model or run folder (default: untrained)")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--batch-sizes", default="32,64,128,256")
    # One thread by default: on a small shared machine, multi-threaded small kernels spend their time in
    # barriers when another process holds a core; the matmul rate is measured with the same thread count.
    parser.add_argument("--threads", type=int, default=1, help="torch threads, for the matmul too (default 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)

    texts, sequences, source = load_split(args.data, args.split, args.seed)
    if args.model is not None:
        model = LogLLM.from_pretrained(args.model)
        what = str(args.model)
    else:
        model = LogLLM.build(preset(args.preset).replace(device="cpu"), seed=args.seed)
        what = f"preset {args.preset} (untrained, seed {args.seed})"
    model.eval()
    cfg, dec = model.config, model.decoder.config  # the decoder's own sizes (decoder_layers etc. are tiny-llama's)
    print(f"model: {what}: encoder {cfg.encoder}, decoder {cfg.decoder} "
          f"(layers {dec.num_hidden_layers}, width {dec.hidden_size}, heads {dec.num_attention_heads})")
    print(f"data: {source}; torch threads {torch.get_num_threads()}")

    occurrences = sum(min(len(s), cfg.max_messages) for s in sequences)
    distinct_seqs = {tuple(s[: cfg.max_messages]) for s in sequences}
    distinct_msgs = {texts[i] for s in sequences for i in s}
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    figures: dict = {"model": what, "data": source, "threads": torch.get_num_threads(),
                     "sequences": len(sequences), "distinct_sequences": len(distinct_seqs),
                     "message_occurrences": occurrences, "distinct_messages": len(distinct_msgs),
                     "versions": library_versions(), "batch_sizes": {}}

    before = matmul_rate()
    # Cold: nothing cached, each distinct message encoded once in this call.
    model.clear_cache()
    encoded = model.stats["encoder_texts"]
    start = time.perf_counter()
    model.score(texts, sequences, batch_size=batch_sizes[-1])
    cold = time.perf_counter() - start
    ours = model.stats["encoder_texts"] - encoded
    # Per-batch dedupe only (what a trainable encoder gets): distinct messages per batch of sequences.
    per_batch = sum(len({texts[i] for s in sequences[k : k + 16] for i in s}) for k in range(0, len(sequences), 16))
    print(f"\nencoder calls on {len(sequences)} sequences: per occurrence (no cache) {occurrences}; "
          f"distinct per batch of 16 {per_batch}; ours (cache, once per distinct message) {ours}")
    print(f"score(), cold cache: {cold:.2f}s, {len(sequences) / cold:.1f} sequences/s")
    figures["encoder_calls"] = {"per_occurrence": occurrences, "per_batch_of_16": per_batch, "cached": ours}
    figures["cold_seconds"] = cold

    model.freeze_encoder_cache(sorted(distinct_msgs))
    print(f"\n{'batch':>6} {'score() seq/s':>14} {'decoder wall s':>15} {'decoder CPU s':>14} {'GFLOP':>8}")
    decoder_rates = {}
    for bs in batch_sizes:
        with DecoderTimer(model) as timer:
            start = time.perf_counter()
            model.score(texts, sequences, batch_size=bs)
            warm = time.perf_counter() - start
        wall, cpu, flops = timer.wall, timer.cpu, timer.flops
        decoder_rates[bs] = (flops / wall, flops / cpu)
        figures["batch_sizes"][bs] = {"score_sequences_per_s": len(sequences) / warm, "decoder_wall_s": wall,
                                      "decoder_cpu_s": cpu, "decoder_flops": flops}
        print(f"{bs:>6} {len(sequences) / warm:>14.1f} {wall:>15.2f} {cpu:>14.2f} {flops / 1e9:>8.1f}")
    after = matmul_rate()
    # The faster of the two readings (before and after) makes the fraction conservative.
    rate = (max(before[0], after[0]), max(before[1], after[1]))
    print(f"\nfloat32 matmul 2048x2048, best of 7: {before[0] / 1e9:.1f} / {after[0] / 1e9:.1f} GFLOP/s per wall "
          f"second (before / after), {before[1] / 1e9:.1f} / {after[1] / 1e9:.1f} per CPU second")
    print("decoder forward as a fraction of the matmul rate (per wall second; per CPU second, the fair "
          "reading when other processes share the cores):")
    for bs, (r_wall, r_cpu) in decoder_rates.items():
        print(f"  batch {bs:>4}: {r_wall / 1e9:6.1f} GFLOP/s = {r_wall / rate[0]:6.1%} (wall); "
              f"{r_cpu / 1e9:6.1f} GFLOP/s = {r_cpu / rate[1]:6.1%} (CPU)")
        figures["batch_sizes"][bs]["fraction_of_matmul_wall"] = r_wall / rate[0]
        figures["batch_sizes"][bs]["fraction_of_matmul_cpu"] = r_cpu / rate[1]
    figures["matmul_flop_rate"] = {"before_wall": before[0], "after_wall": after[0],
                                   "before_cpu": before[1], "after_cpu": after[1]}
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
