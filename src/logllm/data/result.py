"""What `logllm prepare` writes besides the sequences: the messages table, the manifest, and the
result with its one-screen summary."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from logllm import __version__
from logllm.data.dataset import MESSAGE_SCHEMA
from logllm.data.manifest import file_record
from logllm.data.options import PrepareOptions
from logllm.versions import library_versions

SPLIT_ORDER = ("train", "val", "test")


@dataclass
class PrepareResult:
    """What `prepare` wrote: the folder, its manifest, and how long it took."""

    out: Path
    manifest: dict
    seconds: float = 0.0

    def summary(self) -> str:
        """A one-screen text summary (counts per split, anomaly ratio, unparsed lines)."""
        m = self.manifest
        o = m["options"]
        lines = [
            f"prepared {o['family']} -> {self.out}",
            f"  input: {len(m['inputs'])} file(s), {m['lines']:,} lines"
            + (f" (range {o['start_line'] or 1}-{o['end_line'] or 'end'})" if o["start_line"] or o["end_line"] else ""),
            f"  distinct messages: {m['distinct_messages']:,} (mask: {o['mask']})",
            f"  {'split':<6} {'sequences':>10} {'anomalous':>10} {'ratio':>8} {'lines':>11}",
        ]
        for name in SPLIT_ORDER:
            if name in m["splits"]:
                s = m["splits"][name]
                ratio = s["anomalous"] / s["sequences"] if s["sequences"] else 0.0
                lines.append(f"  {name:<6} {s['sequences']:>10,} {s['anomalous']:>10,} {ratio:>8.2%} {s['lines']:>11,}")
        dropped = m.get("dropped_lines") or {}
        if dropped:
            total = sum(dropped.values())
            lines.append(f"  {'none':<6} {'':>10} {'':>10} {'':>8} {total:>11,}  lines in no sequence "
                         f"({total / max(m['lines'], 1):.2%} of the input):")
            lines += [f"    {text}" for text in dropped_text(dropped, o)]
            if m.get("lines_without_session_examples"):
                lines.append(f"    first in no session: {', '.join(m['lines_without_session_examples'])}")
        unlabeled = sum(s.get("unlabeled", 0) for s in m["splits"].values())
        if unlabeled:
            lines.append(f"  unlabeled sequences: {unlabeled:,} (no label source; fine for detection, not for training)")
        lines.append(f"  unparsed lines: {m['unparsed_lines']:,} (policy {o['on_unparsed']}"
                     + (f", {m['skipped_lines']:,} skipped" if m["skipped_lines"] else "") + ")")
        for ex in m["unparsed_examples"]:
            lines.append(f"    {ex}")
        for key, text in (("invalid_utf8_lines", "lines with invalid UTF-8 (decoded with replacement)"),
                          ("unlike_lines", f"lines unlike {o['family']} logs (header fields)"),
                          ("truncated_lines", f"lines truncated to {o['max_line_chars']:,} characters"),
                          ("bad_timestamps", "lines with an unreadable timestamp (previous one used)")):
            if m.get(key):
                lines.append(f"  {text}: {m[key]:,}" + (f" (first: {m[key + '_examples'][0]})"
                                                         if m.get(key + "_examples") else ""))
        ml = m.get("missing_labels")
        if ml and ml["count"]:
            lines.append(f"  sequences without a label: {ml['count']:,} ({ml['policy']})")
        lines.append(f"  time: {self.seconds:.2f} s")
        return "\n".join(lines)


#: Why lines are in no sequence (keys of the manifest's ``dropped_lines``), for people.
DROP_REASONS = {
    "skipped_unparsed": "do not match the format, skipped (--on-unparsed skip)",
    "no_session": "name no session (--session-regex {session_regex!r})",
    "missing_label": "are in sessions without a label, dropped (--missing-labels drop)",
    "between_windows": "are between windows (--step {step} > --window {window})",
}
NO_SESSION_KEY = "have no session key (--session-field {session_field!r})"


def dropped_text(dropped: dict[str, int], options: dict) -> list[str]:
    """One line per reason: how many lines are in no sequence, and why (``options``: the run's options)."""
    reasons = {**DROP_REASONS, "no_session": NO_SESSION_KEY} if options.get("session_field") else DROP_REASONS
    return [f"{n:,} " + reasons.get(why, why).format(**options) for why, n in dropped.items()]


def drop_unused_messages(texts: list[str], splits: dict[str, pl.DataFrame]) -> tuple[pl.DataFrame, dict[str, pl.DataFrame]]:
    """The messages table (:data:`~logllm.data.dataset.MESSAGE_SCHEMA`: id, text, count over all splits)
    of the messages some sequence uses (skipped lines and lines outside every session have ids too),
    renumbered in order of first appearance; and the splits with the new ids."""
    counts = np.zeros(len(texts), dtype=np.uint64)
    for df in splits.values():
        ids = df["message_ids"].explode().drop_nulls().to_numpy()
        counts += np.bincount(ids, minlength=len(texts)).astype(np.uint64)
    used = counts > 0
    if not used.all():
        old = np.flatnonzero(used)
        mapping_old = pl.Series(old, dtype=pl.UInt32)
        mapping_new = pl.Series(np.arange(len(old)), dtype=pl.UInt32)
        splits = {k: df.with_columns(pl.col("message_ids").list.eval(
            pl.element().replace_strict(mapping_old, mapping_new, return_dtype=pl.UInt32))) for k, df in splits.items()}
        texts, counts = [texts[i] for i in old], counts[old]
    messages = pl.DataFrame({"message_id": np.arange(len(texts), dtype=np.uint32), "text": texts, "count": counts},
                            schema=MESSAGE_SCHEMA)
    return messages, splits


def build_manifest(o: PrepareOptions, splits: dict[str, pl.DataFrame], n_messages: int, inputs: list[dict],
                   counts: dict, extra: dict, versions: dict | None = None) -> dict:
    """The manifest of a prepared folder: counts, per-split figures, options, inputs, versions."""
    split_info = {}
    for name in SPLIT_ORDER:
        if name in splits:
            df = splits[name]
            split_info[name] = {
                "sequences": len(df),
                "anomalous": int((df["label"] == 1).sum()),
                "unlabeled": int(df["label"].is_null().sum()),
                "lines": int(df["message_ids"].list.len().sum()) if len(df) else 0,
            }
    return {
        "format_version": 1,
        "family": o.family,
        **counts,
        "distinct_messages": n_messages,
        "sequences": sum(s["sequences"] for s in split_info.values()),
        "splits": split_info,
        "options": o.to_dict(),
        "seed": o.seed,
        "inputs": inputs,
        "labels_file": file_record(o.labels) if o.labels else None,
        "version": __version__,
        "versions": versions if versions is not None else library_versions(),
        **extra,
    }
