"""Unstable logs: a new prepared folder whose *test* split is mutated, after LogRobust (Zhang et al.,
FSE'19), and/or re-split so that some templates never appear in training.

Two kinds of synthetic instability, each applied to ``round(ratio * n)`` test sequences chosen with a
numpy Generator seeded from ``seed`` (the two kinds choose independently):

* **message**: one event of the sequence is rewritten by one operation out of :data:`MESSAGE_OPS`
  (a word inserted, a word removed, a word replaced by a log-domain synonym from :data:`SYNONYMS`, a
  variable ``<*>`` moved). The rewritten text is appended to the message table as a new message;
  existing message texts and ids never change, so train and val keep their meaning.
* **sequence**: one operation out of :data:`SEQUENCE_OPS` (an event duplicated, an event removed, two
  adjacent differing events swapped). Line numbers and file indices move with their events: a
  duplicated event repeats its line number.

An operation that cannot change the chosen item (no synonym in the text, a one-event sequence, ...)
gives way to the next one in a seeded order; an item that no operation changes is counted as
``unchanged`` and logged. With ``holdout_templates`` (K), K message ids (half from normal templates,
half from templates seen only in anomalous sequences) are held out: every train/val sequence holding
one moves to the end of test (a group short of candidates leaves its share to the other). The
manifest's ``mutation`` record holds the options, the counts per operation, the held-out ids and
the source folder's identity and file hashes.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl

from logllm.data.dataset import SPLITS, PreparedData, PreparedWriter
from logllm.data.manifest import FILES, MUTATION_KEY, data_identity
from logllm.data.masking import MASK_TOKEN
from logllm.errors import DataError

log = logging.getLogger(__name__)

Kind = Literal["message", "sequence"]
KINDS: tuple[Kind, ...] = ("message", "sequence")
MESSAGE_OPS = ("insert", "remove", "synonym", "move_variable")
SEQUENCE_OPS = ("duplicate", "remove", "swap")
#: log-domain synonym pairs; each is used both ways
SYNONYMS: dict[str, str] = {
    "failed": "failure", "error": "err", "connection": "conn", "received": "got", "exception": "exc",
    "terminating": "stopping", "block": "blk", "receiving": "getting", "served": "sent", "deleting": "removing",
    "interrupt": "irq", "packet": "pkt", "closed": "shut", "starting": "launching", "warning": "warn",
}
_BOTH_WAYS = {**SYNONYMS, **{v: k for k, v in SYNONYMS.items()}}
#: words a message insertion draws from
FILLERS = ("now", "again", "info", "the", "new", "status", "done", "local")


@dataclass(frozen=True)
class MutateOptions:
    """How `logllm mutate` rewrites a prepared folder."""

    ratio: float = 0.0
    """share of test sequences mutated per kind, in [0, 1] (the experiment uses 0, 0.05, 0.1, 0.2, 0.3)"""
    seed: int = 0
    """seed of the numpy Generator behind every choice"""
    kinds: tuple[Kind, ...] = KINDS
    """which mutations: ``message`` and/or ``sequence``"""
    holdout_templates: int = 0
    """message ids held out of train/val (half normal, half anomalous-only); 0 keeps the split"""
    holdout_max_share: float = 0.05
    """a held-out template appears in at most this share of train+val sequences (keeps most of training)"""

    def __post_init__(self) -> None:
        if not 0.0 <= self.ratio <= 1.0:
            raise DataError(f"--ratio {self.ratio}: must be between 0 and 1 (0.1 mutates 10% of test sequences)")
        bad = [k for k in self.kinds if k not in KINDS]
        if bad or not self.kinds:
            raise DataError(f"--kinds {','.join(self.kinds)!r}: expected a comma list of {', '.join(KINDS)}")
        if self.holdout_templates < 0:
            raise DataError(f"--holdout-templates {self.holdout_templates}: must be 0 or more")
        if not 0.0 < self.holdout_max_share <= 1.0:
            raise DataError(f"holdout_max_share {self.holdout_max_share}: must be in (0, 1]")


def mutate_text(text: str, op: str, rng: np.random.Generator) -> str | None:
    """``text`` rewritten by ``op`` (one of :data:`MESSAGE_OPS`); None when the op cannot change it."""
    words = text.split(" ")
    if op == "insert":
        words.insert(int(rng.integers(0, len(words) + 1)), FILLERS[int(rng.integers(len(FILLERS)))])
    elif op == "remove":
        if len(words) < 2:
            return None
        del words[int(rng.integers(len(words)))]
    elif op == "synonym":
        at = [i for i, w in enumerate(words) if w.lower() in _BOTH_WAYS]
        if not at:
            return None
        i = at[int(rng.integers(len(at)))]
        words[i] = _BOTH_WAYS[words[i].lower()]
    elif op == "move_variable":
        at = [i for i, w in enumerate(words) if w == MASK_TOKEN]
        if not at or len(words) < 2:
            return None
        i = at[int(rng.integers(len(at)))]
        word = words.pop(i)
        choices = [j for j in range(len(words) + 1) if j != i]
        words.insert(choices[int(rng.integers(len(choices)))], word)
    else:
        raise ValueError(f"unknown message op {op!r}")
    out = " ".join(words)
    return None if out == text else out


def mutate_events(ids: list[int], op: str, rng: np.random.Generator) -> list[int] | None:
    """Positions of the mutated sequence into the original ``ids`` (so file and line columns follow the
    events); None when ``op`` cannot change it."""
    n = len(ids)
    pos = list(range(n))
    if op == "duplicate":
        if n == 0:
            return None
        i = int(rng.integers(n))
        pos.insert(i + 1, i)
    elif op == "remove":
        if n < 2:
            return None
        del pos[int(rng.integers(n))]
    elif op == "swap":
        at = [i for i in range(n - 1) if ids[i] != ids[i + 1]]
        if not at:
            return None
        i = at[int(rng.integers(len(at)))]
        pos[i], pos[i + 1] = pos[i + 1], pos[i]
    else:
        raise ValueError(f"unknown sequence op {op!r}")
    return pos


def _pick(n: int, ratio: float, rng: np.random.Generator) -> np.ndarray:
    return np.sort(rng.choice(n, size=int(round(ratio * n)), replace=False)) if n else np.zeros(0, dtype=np.int64)


def _apply(ops: tuple[str, ...], rng: np.random.Generator, fn: Any, item: Any) -> tuple[str, Any]:
    for k in rng.permutation(len(ops)):
        out = fn(item, ops[int(k)], rng)
        if out is not None:
            return ops[int(k)], out
    return "unchanged", None


def _mutate_test(test: pl.DataFrame, texts: list[str], opts: MutateOptions,
                 rng: np.random.Generator) -> tuple[pl.DataFrame, dict[str, dict[str, int]]]:
    """The mutated test table (``texts`` gains the new messages) and the counts per kind and op."""
    cols = {c: test[c].to_list() for c in ("message_ids", "file_index", "line_numbers")}
    index = {t: i for i, t in enumerate(texts)}
    counts: dict[str, dict[str, int]] = {}
    n = len(test)
    if "message" in opts.kinds:
        c = counts.setdefault("message", {op: 0 for op in (*MESSAGE_OPS, "unchanged")})
        for row in _pick(n, opts.ratio, rng):
            ids = list(cols["message_ids"][row])
            if not ids:
                c["unchanged"] += 1
                continue
            at = int(rng.integers(len(ids)))
            op, text = _apply(MESSAGE_OPS, rng, mutate_text, texts[ids[at]])
            c[op] += 1
            if text is not None:
                if text not in index:
                    index[text] = len(texts)
                    texts.append(text)
                ids[at] = index[text]
                cols["message_ids"][row] = ids
    if "sequence" in opts.kinds:
        c = counts.setdefault("sequence", {op: 0 for op in (*SEQUENCE_OPS, "unchanged")})
        for row in _pick(n, opts.ratio, rng):
            op, pos = _apply(SEQUENCE_OPS, rng, mutate_events, list(cols["message_ids"][row]))
            c[op] += 1
            if pos is not None:
                for values in cols.values():
                    values[row] = [values[row][p] for p in pos]
    for kind, c in counts.items():
        if c["unchanged"]:
            log.warning("%s mutation: %d chosen test sequence(s) left unchanged (no operation applies)",
                        kind, c["unchanged"])
        log.info("%s mutations: %s", kind, ", ".join(f"{k} {v}" for k, v in c.items()))
    out = test.with_columns(pl.Series(name, values, dtype=test.schema[name]) for name, values in cols.items())
    return out, counts


def _holdout(splits: dict[str, pl.DataFrame], opts: MutateOptions,
             rng: np.random.Generator) -> dict[str, Any]:
    """Move every train/val sequence holding a held-out message id to test (``splits`` is updated)."""
    fit = pl.concat([splits[s] for s in ("train", "val") if s in splits])
    rows = fit.select(pl.int_range(pl.len()).alias("row"), "label", "message_ids").explode("message_ids").unique()
    per_id = rows.group_by("message_ids").agg(pl.len().alias("n"), (pl.col("label") == 1).all().alias("anom_only"))
    per_id = per_id.filter(pl.col("n") <= max(1, int(opts.holdout_max_share * len(fit)))).sort("message_ids")
    anomalous = per_id.filter(pl.col("anom_only"))["message_ids"].to_list()
    normal = per_id.filter(~pl.col("anom_only"))["message_ids"].to_list()
    # half from each group; a group short of candidates leaves its share to the other
    k_anom = min(len(anomalous), opts.holdout_templates // 2)
    k_norm = min(len(normal), opts.holdout_templates - k_anom)
    k_anom = min(len(anomalous), opts.holdout_templates - k_norm)
    held_normal = sorted(int(x) for x in rng.choice(normal, size=k_norm, replace=False)) if k_norm else []
    held_anom = sorted(int(x) for x in rng.choice(anomalous, size=k_anom, replace=False)) if k_anom else []
    if k_norm + k_anom < opts.holdout_templates:
        log.warning("--holdout-templates %d: only %d candidate templates (%d normal, %d anomalous-only; in at "
                    "most %.0f%% of train+val sequences); holding out %d", opts.holdout_templates,
                    len(normal) + len(anomalous), len(normal), len(anomalous), 100 * opts.holdout_max_share,
                    k_norm + k_anom)
    held = held_normal + held_anom
    moved: dict[str, int] = {}
    taken = []
    for name in ("train", "val"):
        if name not in splits:
            continue
        hit = splits[name]["message_ids"].list.eval(pl.element().is_in(held)).list.any()
        taken.append(splits[name].filter(hit))
        splits[name] = splits[name].filter(~hit)
        moved[name] = int(hit.sum())
        log.info("template holdout: %d %s sequence(s) moved to test", moved[name], name)
    if not len(splits["train"]):
        raise DataError(f"--holdout-templates {opts.holdout_templates}: no training sequence is left; "
                        "hold out fewer templates")
    splits["test"] = pl.concat([splits["test"], *taken])
    return {"normal": held_normal, "anomalous": held_anom, "moved_to_test": moved}


def mutate_prepared(source: str | Path, out: str | Path, options: MutateOptions, *,
                    overwrite: bool = False) -> dict[str, Any]:
    """Write ``out``: the prepared folder ``source`` with its test split mutated (and re-split with a
    template holdout); returns the manifest as written. Train and val are copied as they are unless
    ``options.holdout_templates`` moves sequences out of them."""
    data = PreparedData(source)
    data.verify()
    if not data.has_split("test"):
        raise DataError(f"{data.root}: no test split to mutate")
    rng = np.random.default_rng(options.seed)
    with PreparedWriter(out, overwrite=overwrite) as writer:
        splits = {s: data.split(s) for s in SPLITS if data.has_split(s)}
        texts = list(data.messages)
        holdout = _holdout(splits, options, rng) if options.holdout_templates else None
        splits["test"], counts = _mutate_test(splits["test"], texts, options, rng)
        src = data.manifest
        manifest = {k: v for k, v in src.items() if k != FILES}
        manifest["splits"] = {**(src.get("splits") or {}), **{
            name: {**(src.get("splits") or {}).get(name, {}), "sequences": len(df),
                   "anomalous": int((df["label"] == 1).sum())} for name, df in splits.items()}}
        manifest[MUTATION_KEY] = {
            "options": {**asdict(options), "kinds": list(options.kinds)},
            "counts": counts,
            "new_messages": len(texts) - len(data.messages),
            "holdout": holdout,
            "train_unchanged": holdout is None or not any(holdout["moved_to_test"].values()),
            "mutated_from": {"root": str(data.root), "identity": data_identity(src),
                             FILES: src.get(FILES)},
        }
        return writer.write(texts, splits, manifest)

