"""Files and folders as sessions (`--session-by file|dir`), Loghub Hadoop labels, and splits that keep
whole files or folders (`--split-by`). Every tree is built in the test (a few lines per file)."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from logllm.data.dataset import PreparedData
from logllm.data.labels_hadoop import read_hadoop_labels
from logllm.data.options import PrepareOptions
from logllm.data.prepare import prepare
from logllm.data.splits import connected_groups
from logllm.errors import ConfigError, DataError

HADOOP_FORMAT = r"<Date> <Time> <Level> \[<Process>\] <Component>: <Content>"
# application -> Loghub category (as in abnormal_label.txt)
APPS = {
    "application_1445087491445_0005": "Normal",
    "application_1445087491445_0001": "Machine down",
    "application_1445175094696_0002": "Network disconnection",
    "application_1445182159119_0001": "Disk full",
    "application_1445087491445_0007": "Normal",
    "application_1445062781478_0011": "Normal",
}
LABEL_TEXT = """The logs are generated from a Hadoop cluster with injected failures.

### WordCount
Normal:
+ application_1445087491445_0005
+ application_1445087491445_0007
Machine down:
+ application_1445087491445_0001

### PageRank
### Normal:
+ application_1445062781478_0011
Network disconnection:
+ application_1445175094696_0002
Disk full:
+ application_1445182159119_0001
"""


def hadoop_line(i: int, text: str, level: str = "INFO") -> str:
    return f"2015-10-17 15:37:{i % 60:02d},{100 + i} {level} [main] org.apache.hadoop.mapred.MapTask: {text}\n"


def hadoop_tree(root: Path, apps: dict[str, str] = APPS, containers: int = 2, lines: int = 5) -> Path:
    """One folder per application, ``containers`` container logs in each (the second written first,
    to show that files are read in name order), and abnormal_label.txt beside the folders."""
    root.mkdir(parents=True)
    for app, category in apps.items():
        (root / app).mkdir()
        for c in reversed(range(1, containers + 1)):
            body = [hadoop_line(i, f"task {i} of container {c} in {app[-4:]}") for i in range(lines)]
            if category != "Normal" and c == containers:
                body.append(hadoop_line(99, "Failed to renew lease for 30 seconds", "WARN"))
            (root / app / f"container_{app[12:]}_01_{c:06d}.log").write_text("".join(body))
    (root / "abnormal_label.txt").write_text(LABEL_TEXT)
    return root


def dir_options(root: Path, **changes) -> PrepareOptions:
    base = {"family": "custom", "inputs": (str(root),), "format": HADOOP_FORMAT, "session_by": "dir",
            "labels": str(root / "abnormal_label.txt"), "labels_format": "loghub-hadoop", "mask": "none"}
    base.update(changes)
    return PrepareOptions(**base)


def all_sequences(data: PreparedData) -> pl.DataFrame:
    return pl.concat([data.split(s).with_columns(pl.lit(s).alias("split"))
                      for s in ("train", "val", "test") if data.has_split(s)])


def test_hadoop_tree_prepares_one_session_per_folder(tmp_path: Path) -> None:
    root = hadoop_tree(tmp_path / "Hadoop")
    result = prepare(dir_options(root, train_ratio=0.5), tmp_path / "out")
    data = PreparedData(result.out)
    seqs = all_sequences(data)
    assert sorted(seqs["sequence_id"]) == sorted(APPS)
    labels = dict(zip(seqs["sequence_id"], seqs["label"]))
    assert labels == {app: int(cat != "Normal") for app, cat in APPS.items()}
    inputs = [i["path"] for i in result.manifest["inputs"]]
    texts = data.messages
    for row in seqs.iter_rows(named=True):
        # Every line of the folder's files, file by file in name order, each pointing at its file:line.
        files = sorted((root / row["sequence_id"]).iterdir())
        expected = [(str(f), n + 1, line.split(": ", 1)[1])
                    for f in files for n, line in enumerate(f.read_text().splitlines())]
        got = [(inputs[fi], ln, texts[m]) for fi, ln, m in zip(row["file_index"], row["line_numbers"], row["message_ids"])]
        assert got == expected
    layout = result.manifest["session_files"]
    assert (layout["sessions"], layout["files"], layout["bad_files"]) == (6, 12, [])
    assert layout["ignored_examples"] == [f"{root / 'abnormal_label.txt'} (the --labels file)"]


def test_windows_inside_sessions_never_cross_a_session(tmp_path: Path) -> None:
    root = hadoop_tree(tmp_path / "Hadoop", lines=4)  # 8 or 9 lines per application
    result = prepare(dir_options(root, window=3, split="chronological"), tmp_path / "out")
    seqs = all_sequences(PreparedData(result.out))
    inputs = [Path(i["path"]) for i in result.manifest["inputs"]]
    session = seqs["sequence_id"].str.split("#").list.first()
    for sid, files in zip(session, seqs["file_index"]):
        assert {inputs[f].parent.name for f in files} == {sid}
    counts = session.value_counts().sort("sequence_id")
    sizes = {app: 2 * 4 + (cat != "Normal") for app, cat in APPS.items()}
    assert dict(counts.iter_rows()) == {app: -(-n // 3) for app, n in sizes.items()}
    # Each window takes its application's label, the start-up windows of a failed one too.
    assert all(lab == int(APPS[s] != "Normal") for s, lab in zip(session, seqs["label"]))
    assert seqs.filter(pl.col("sequence_id") == "application_1445087491445_0001#w000002")["line_numbers"].item().to_list() \
        == [3, 4, 5]  # lines 7-9 of the application: lines 3-5 of its second container


def test_loghub_hadoop_labels_reader(tmp_path: Path) -> None:
    path = tmp_path / "abnormal_label.txt"
    path.write_text(LABEL_TEXT)
    df = read_hadoop_labels(str(path))
    assert dict(zip(df["sequence_id"], df["category"])) == {a: c.lower() for a, c in APPS.items()}
    assert dict(zip(df["sequence_id"], df["label"])) == {a: int(c != "Normal") for a, c in APPS.items()}
    path.write_text("### WordCount\n+ application_1\n")
    with pytest.raises(DataError, match=r"abnormal_label.txt:2: entry 'application_1' comes before any category"):
        read_hadoop_labels(str(path))
    path.write_text("Normal:\n+ application_1\nDisk full:\n+ application_1\n")
    with pytest.raises(DataError, match=r"abnormal_label.txt:4: 'application_1' is listed under 'disk full' and, "
                                        r"at line 2, under 'normal'"):
        read_hadoop_labels(str(path))
    path.write_text("only text\n")
    with pytest.raises(DataError, match="no '\\+ ID' entry"):
        read_hadoop_labels(str(path))


def broken_tree(tmp_path: Path) -> tuple[Path, list[Path]]:
    """A Hadoop tree where one container log is a gzip cut short, one cannot be read (where the tests
    do not run as root, who reads any file) and one is empty; returns the root and those files."""
    root = hadoop_tree(tmp_path / "Hadoop")
    cut = root / "application_1445087491445_0005" / "container_zz_000003.log.gz"
    whole = gzip.compress("".join(hadoop_line(i, f"gz line {i}") for i in range(3000)).encode(), mtime=0)
    cut.write_bytes(whole[: len(whole) // 2])
    locked = root / "application_1445087491445_0007" / "container_zz_000003.log"
    locked.write_text(hadoop_line(0, "secret"))
    locked.chmod(0)
    empty = root / "application_1445087491445_0007" / "container_zz_000004.log"
    empty.write_text("")
    return root, [cut, *([locked] if os.geteuid() != 0 else []), empty]


@pytest.mark.parametrize("policy", ["keep", "skip"])
def test_a_cut_short_or_unreadable_file_is_named_and_counted(tmp_path: Path, policy: str) -> None:
    root, broken = broken_tree(tmp_path)
    # Small chunks: the gzip yields its first lines before the cut is found.
    result = prepare(dir_options(root, on_unparsed=policy), tmp_path / "out", chunk_bytes=4096)
    layout = result.manifest["session_files"]
    bad = layout["bad_files"]
    assert [b["path"] for b in bad] == [str(p) for p in broken]
    assert "is the file complete?" in bad[0]["error"] and "file is empty" in bad[-1]["error"]
    assert layout["bad_files_policy"] == policy
    seqs = all_sequences(PreparedData(result.out))
    assert len(seqs) == 6  # the sessions stay; only the bad files' lines are missing
    inputs = [i["path"] for i in result.manifest["inputs"]]
    from_cut = sum(inputs[f] == str(broken[0]) for files in seqs["file_index"] for f in files)
    read = bad[0]["lines_read"]
    assert 0 < read < 3000
    if policy == "keep":  # the lines read before the cut stay
        assert from_cut == read
        assert not result.manifest["dropped_lines"]
    else:
        assert from_cut == 0 and result.manifest["dropped_lines"] == {"in_unreadable_files": read}
    assert result.manifest["lines"] == 6 * 10 + 3 + read + (len(broken) == 2)  # (+ the "locked" line, as root)


def test_a_bad_file_stops_the_run_with_on_unparsed_fail(tmp_path: Path) -> None:
    root, broken = broken_tree(tmp_path)
    with pytest.raises(DataError, match=f"{broken[0]}: cannot read .*a file of --session-by"):
        prepare(dir_options(root, on_unparsed="fail"), tmp_path / "out")



def test_cli_summary_names_the_bad_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from logllm.cli import main

    root, broken = broken_tree(tmp_path)
    assert main(["prepare", "custom", "--log", str(root), "--format", HADOOP_FORMAT, "--session-by", "dir",
                 "--labels", str(root / "abnormal_label.txt"), "--labels-format", "loghub-hadoop",
                 "--on-unparsed", "skip", "--no-progress", "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert f"unreadable or cut-short files: {len(broken)} (skip), e.g.:\n    {broken[0]}: cannot read" in out
    assert f"--log {broken[-1]}: file is empty (0 bytes)" in out


def folder_of_file_sessions(root: Path, folders: int = 12, files: int = 3) -> dict[str, int]:
    """``folders`` folders of ``files`` logs each; every file of folder k is anomalous when k % 3 == 0.
    Returns the labels, keyed by the path relative to ``root``."""
    labels = {}
    for k in range(folders):
        for j in range(files):
            path = root / f"job{k:02d}" / f"part{j}.log"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(hadoop_line(i, f"job {k} part {j} step {i}") for i in range(3)))
            labels[f"job{k:02d}/part{j}.log"] = int(k % 3 == 0)
    return labels


def folders_per_split(result_out: Path, manifest: dict) -> dict[str, set[str]]:
    """Which splits the lines of each folder landed in (from the sequences' file_index)."""
    seqs = all_sequences(PreparedData(result_out))
    inputs = [Path(i["path"]).parent.name for i in manifest["inputs"]]
    where: dict[str, set[str]] = {}
    for split, files in zip(seqs["split"], seqs["file_index"]):
        for f in set(files):
            where.setdefault(inputs[f], set()).add(split)
    return where


@pytest.mark.parametrize("split", ["random", "chronological"])
def test_split_by_dir_never_puts_a_folder_in_two_splits(tmp_path: Path, split: str) -> None:
    root = tmp_path / "jobs"
    folder_of_file_sessions(root)
    opts = PrepareOptions(family="custom", inputs=(str(root),), format=HADOOP_FORMAT, session_by="file",
                          split=split, val_ratio=0.25, seed=3)
    # Each file is a sequence: split by sequence, the folders are cut (so the check below can fail) ...
    base = prepare(opts, tmp_path / "by_sequence")
    assert any(len(s) > 1 for s in folders_per_split(base.out, base.manifest).values())
    # ... split by folder, never.
    result = prepare(PrepareOptions(**{**opts.to_dict(), "split_by": "dir", "inputs": (str(root),),
                                       "normal_values": ("-",), "csv_splits": ()}), tmp_path / "by_dir")
    where = folders_per_split(result.out, result.manifest)
    assert len(where) == 12 and all(len(s) == 1 for s in where.values())
    assert {s for v in where.values() for s in v} == {"train", "val", "test"}
    assert result.manifest["split_groups"] == {"by": "dir", "dirs": 12, "groups": 12,
                                               "per_split": result.manifest["split_groups"]["per_split"]}
    assert sum(result.manifest["split_groups"]["per_split"].values()) == 12


def test_session_by_file_with_a_labels_csv(tmp_path: Path) -> None:
    root = tmp_path / "jobs"
    labels = folder_of_file_sessions(root, folders=3, files=2)
    extra = tmp_path / "extra.log"  # a file given directly: keyed by its name
    extra.write_text(hadoop_line(0, "standalone"))
    csv = tmp_path / "labels.csv"
    csv.write_text("file,label\n" + "".join(f"{k},{'Anomaly' if v else 'Normal'}\n" for k, v in labels.items())
                   + "extra.log,Anomaly\n")
    result = prepare(PrepareOptions(family="custom", inputs=(str(root), str(extra)), format=HADOOP_FORMAT,
                                    session_by="file", labels=str(csv)), tmp_path / "out")
    seqs = all_sequences(PreparedData(result.out))
    assert dict(zip(seqs["sequence_id"], seqs["label"])) == {**labels, "extra.log": 1}
    inputs = [i["path"] for i in result.manifest["inputs"]]
    for sid, files, lines in zip(seqs["sequence_id"], seqs["file_index"], seqs["line_numbers"]):
        path = extra if sid == "extra.log" else root / sid
        assert [inputs[f] for f in files] == [str(path)] * len(files)
        assert lines.to_list() == list(range(1, len(path.read_text().splitlines()) + 1))
    csv.write_text("file,label\njob00/part0.log,Normal\n")
    with pytest.raises(DataError, match="6 of 7 sessions have no label"):
        prepare(PrepareOptions(family="custom", inputs=(str(root), str(extra)), format=HADOOP_FORMAT,
                               session_by="file", labels=str(csv)), tmp_path / "out2")


def test_split_by_file_keeps_a_files_windows_together(tmp_path: Path) -> None:
    logs = []
    for k in range(5):
        path = tmp_path / f"node{k}.log"
        path.write_text("".join(hadoop_line(i, f"node {k} step {i}") for i in range(20)))
        logs.append(str(path))
    opts = PrepareOptions(family="custom", inputs=tuple(logs), format=HADOOP_FORMAT, window=4, step=2,
                          split="random", split_by="file", train_ratio=0.6)
    result = prepare(opts, tmp_path / "out")  # overlapping windows: allowed, whole files per split
    seqs = all_sequences(PreparedData(result.out))
    split_of_file: dict[int, set[str]] = {}
    for split, files in zip(seqs["split"], seqs["file_index"]):
        for f in set(files):
            split_of_file.setdefault(f, set()).add(split)
    assert sorted(split_of_file) == list(range(5)) and all(len(s) == 1 for s in split_of_file.values())
    assert result.manifest["splits"]["train"]["sequences"] == 3 * 9  # 3 of 5 files, 9 windows each
    with pytest.raises(ConfigError, match="--split-by file\\|dir"):
        prepare(PrepareOptions(**{**opts.to_dict(), "split_by": "sequence", "inputs": tuple(logs),
                                  "normal_values": ("-",), "csv_splits": ()}), tmp_path / "out2")


def test_connected_groups_join_what_one_sequence_spans() -> None:
    keys = [np.array([2]), np.array([0]), np.array([0, 3]), np.array([1]), np.array([3, 1]), np.array([4])]
    groups, n = connected_groups(keys, 5)
    assert n == 3 and groups.tolist() == [0, 1, 1, 1, 1, 2]


@pytest.mark.parametrize(("changes", "message"), [
    ({"session_regex": "app-[0-9]+"}, "--session-by dir makes the sessions"),
    ({"start_line": 5}, "--start-line/--end-line count lines over one stream"),
    ({"step": 3}, "--step 3 needs --window"),
    ({"family": "hdfs"}, "hdfs sessions are block ids"),
    ({"labels": None}, "--labels-format loghub-hadoop needs --labels"),
    ({"split_by": "node"}, "--split-by 'node': choose one of sequence, file, dir"),
])
def test_option_errors(tmp_path: Path, changes: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        dir_options(tmp_path, **changes).resolved()


def test_cli_dir_sessions_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from logllm.cli import main

    root = hadoop_tree(tmp_path / "Hadoop")
    (root / "notes.txt").write_text("not a log\n")
    args = ["prepare", "custom", "--log", str(root), "--format", HADOOP_FORMAT, "--session-by", "dir",
            "--labels", str(root / "abnormal_label.txt"), "--labels-format", "loghub-hadoop", "--split-by", "dir",
            "--no-progress", "--out"]
    assert main([*args, str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert f"paths in no session: 2 (first: {root / 'abnormal_label.txt'} (the --labels file))" in out
    assert PreparedData(tmp_path / "out").manifest["options"]["session_by"] == "dir"
    assert main([*args[:3], str(root / "abnormal_label.txt"), *args[4:], str(tmp_path / "out2")]) == 2
    assert "with --session-by dir each --log is a folder" in capsys.readouterr().err


def test_overlapping_windows_inside_folders_split_by_dir(tmp_path: Path) -> None:
    root = hadoop_tree(tmp_path / "Hadoop", lines=4)
    result = prepare(dir_options(root, window=3, step=2, split="random", split_by="dir", train_ratio=0.5),
                     tmp_path / "out")
    seqs = all_sequences(PreparedData(result.out))
    split_of = {}
    for sid, split in zip(seqs["sequence_id"].str.split("#").list.first(), seqs["split"]):
        split_of.setdefault(sid, set()).add(split)
    assert len(split_of) == 6 and all(len(s) == 1 for s in split_of.values())
    assert result.manifest["split_groups"]["per_split"] == {"train": 3, "test": 3}


def test_split_by_file_joins_files_that_one_session_spans(tmp_path: Path) -> None:
    logs = {"a.log": ["req-1 start", "req-2 start"], "b.log": ["req-1 end", "req-3 start"],
            "c.log": ["req-4 start", "req-4 end"], "d.log": ["req-5 start"]}
    for name, lines in logs.items():
        (tmp_path / name).write_text("".join(f"2015-10-17 10:00:0{i} {t}\n" for i, t in enumerate(lines)))
    result = prepare(PrepareOptions(family="custom", inputs=tuple(str(tmp_path / n) for n in logs),
                                    format="<Date> <Time> <Content>", session_regex=r"req-[0-9]+",
                                    split_by="file", train_ratio=0.5, seed=1), tmp_path / "out")
    groups = result.manifest["split_groups"]
    assert (groups["files"], groups["groups"]) == (4, 3)  # a.log and b.log share req-1
    seqs = all_sequences(PreparedData(result.out))
    split_of_file: dict[int, set[str]] = {}
    for split, files in zip(seqs["split"], seqs["file_index"]):
        for f in set(files):
            split_of_file.setdefault(f, set()).add(split)
    assert all(len(s) == 1 for s in split_of_file.values())
    assert split_of_file[0] == split_of_file[1]
