"""Fuzz the CLI in-process: malformed configs and calls exit non-zero with one line naming the field.

Every case is ``(argv, needle)``: the CLI must return a non-zero code, print exactly one
non-empty line to stderr that starts with ``error:`` and contains ``needle`` (the field or
argument at fault), print no traceback, and write no run to the history.
``benchmarks/fuzz_cli.py`` runs the same cases and prints the tally.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

# (dotted field, bad value, the word the message must contain)
BAD_FIELDS: list[tuple[str, object, str]] = [
    ("data.name", ["moons"], "data.name"), ("data.name", 1, "data.name"), ("data.name", None, "data.name"),
    ("data.name", "nope", "data.name"), ("data.name", {"a": 1}, "data.name"),
    ("data.download", "no", "data.download"), ("data.download", 1, "data.download"),
    ("data.download", None, "data.download"), ("data.augment", "yes", "data.augment"),
    ("data.augment", 0, "data.augment"), ("data.data_dir", 123, "data.data_dir"),
    ("data.data_dir", ["x"], "data.data_dir"), ("data.data_dir", "a\u0000b", "data.data_dir"),
    ("data.n_samples", 1e9, "data.n_samples"), ("data.n_samples", "5", "data.n_samples"),
    ("data.n_samples", True, "data.n_samples"), ("data.n_samples", -1, "data.n_samples"),
    ("data.n_samples", 10**9, "data.n_samples"), ("data.n_samples", 2**70, "data.n_samples"),
    ("data.noise", "x", "data.noise"), ("data.noise", -1, "data.noise"), ("data.noise", None, "data.noise"),
    ("data.n_classes", 1, "data.n_classes"), ("data.n_classes", 2.5, "data.n_classes"),
    ("data.train_subset", -5, "data.train_subset"), ("data.train_subset", "all", "data.train_subset"),
    ("data.val_fraction", 0.9, "data.val_fraction"), ("data.val_fraction", [], "data.val_fraction"),
    ("data.seed", 2**70, "data.seed"), ("data.seed", -1, "data.seed"), ("data.seed", "0", "data.seed"),
    ("data.omit_class", 99, "data.omit_class"), ("data.omit_class", "1", "data.omit_class"),
    ("data", [1, 2], "data"), ("data", "moons", "data"), ("data", None, "data"),
    ("data.bogus", 1, "bogus"),
    ("teacher.name", ["mlp"], "teacher"), ("teacher.name", 7, "teacher"), ("teacher.name", "nope", "teacher"),
    ("teacher.params", [], "teacher"), ("teacher.params", "x", "teacher"),
    ("teacher.params", {"hidden": "abc"}, "teacher"), ("teacher.params", {"hidden": [-1]}, "teacher"),
    ("teacher.params", {"bogus": 1}, "teacher"), ("teacher.params", {"hidden": [100000, 100000]}, "teacher"),
    ("teacher.params", {"hidden": [20000, 20000]}, "teacher"), ("teacher", 5, "teacher"),
    ("student.name", {"x": 1}, "student"), ("student.params", {"hidden": [1.5]}, "student"),
    ("student.params", {"hidden": [50000, 50000]}, "student"), ("student.bogus", 1, "bogus"),
    ("loss.name", ["kd"], "loss.name"), ("loss.name", "nope", "loss.name"),
    ("loss.temperature", 0, "loss.temperature"), ("loss.temperature", -1, "loss.temperature"),
    ("loss.temperature", "4", "loss.temperature"), ("loss.temperature", 1e308, "loss.temperature"),
    ("loss.alpha", 2, "loss.alpha"), ("loss.alpha", None, "loss.alpha"), ("loss.alpha", True, "loss.alpha"),
    ("loss.t2", "yes", "loss.t2"), ("loss.t2", 1, "loss.t2"), ("loss.params", "x", "loss"),
    ("loss.params", {"bogus": 1}, "bogus"), ("loss", [], "loss"),
    ("optim.epochs", 0, "epochs"), ("optim.epochs", 1.5, "epochs"), ("optim.epochs", 10**6, "epochs"),
    ("optim.epochs", "5", "epochs"), ("optim.lr", 0, "lr"), ("optim.lr", -1, "lr"), ("optim.lr", 1e308, "lr"),
    ("optim.batch_size", 0, "batch_size"), ("optim.batch_size", 10**9, "batch_size"),
    ("optim.optimizer", "rmsprop", "optimizer"), ("optim.optimizer", 1, "optimizer"),
    ("optim.optimizer", ["adam"], "optimizer"), ("optim.weight_decay", 1e308, "weight_decay"),
    ("optim.weight_decay", -1, "weight_decay"), ("optim.schedule", "x", "schedule"),
    ("optim.schedule", {"a": 1}, "schedule"), ("optim", "fast", "optim"),
    ("teacher_optim.epochs", -3, "epochs"), ("teacher_optim.lr", "high", "lr"),
    ("teacher_optim.epochs", 1001, "epochs"),
    ("teacher_source", 1, "teacher_source"), ("teacher_source", "x", "teacher_source"),
    ("teacher_source", ["train"], "teacher_source"), ("teacher_source", "run:abc", "teacher_source"),
    ("teacher_source", "file:/no/such/file.pt", "teacher_source"),
    ("seed", 2**70, "seed"), ("seed", -1, "seed"), ("seed", "0", "seed"), ("seed", 1.5, "seed"),
    ("seed", True, "seed"), ("seed", None, "seed"),
    ("device", "cuda:abc", "device"), ("device", "tpu", "device"), ("device", 1, "device"),
    ("device", "cuda:99", "device"), ("device", ["cpu"], "device"), ("device", "", "device"),
    ("name", 1, "name"), ("name", [], "name"), ("name", "\ud800", "name"), ("name", "x" * 5000, "name"),
    ("extra_teachers", "x", "extra_teachers"), ("extra_teachers", [1], "extra_teachers"),
    ("extra_teachers", [{"name": "nope"}], "extra_teachers"),
    ("extra_teacher_sources", "x", "extra_teacher_sources"),
    ("extra_teacher_sources", ["bogus"], "extra_teacher_sources"),
    ("teacher_weights", [-1], "teacher_weights"), ("teacher_weights", "x", "teacher_weights"),
    ("teacher_weights", [1, 2, 3], "teacher_weights"), ("bogus", 1, "bogus"),
]
if not __import__("torch").cuda.is_available():
    BAD_FIELDS.append(("device", "cuda", "device"))
    BAD_FIELDS.append(("device", "mps", "device"))


def _with(dotted: str, value) -> dict:
    d: dict = {}
    cur = d
    *head, last = dotted.split(".")
    for k in head:
        cur = cur.setdefault(k, {})
    cur[last] = value
    return d


def cases(tmp: Path) -> list[tuple[list[str], str]]:
    """Every malformed call, with the files it needs written under ``tmp``."""
    runs = str(tmp / "runs")
    base = ["--runs-dir", runs]
    out: list[tuple[list[str], str]] = []

    def cfg_file(name: str, content: str | bytes) -> str:
        p = tmp / name
        p.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8", "surrogatepass"))
        return str(p)

    for i, (dotted, value, needle) in enumerate(BAD_FIELDS):
        text = json.dumps(_with(dotted, value))
        out.append((base + ["run", cfg_file(f"bad{i}.json", text)], needle))
    # the same fields through --set (a few, for the parser path)
    for dotted, value, needle in BAD_FIELDS[::4]:
        out.append((base + ["run", "--set", f"{dotted}={json.dumps(value)}"], needle))
    # files that are not configs
    for i, (content, needle) in enumerate([
            ("[]", "JSON object"), ('"x"', "JSON object"), ("null", "JSON object"), ("1", "JSON object"),
            ("true", "JSON object"), ("{", "JSON"), ("", "JSON"), (b"\x80\x81\xfe\xff\x00binary", "UTF-8"),
            ("[" * 100000 + "]" * 100000, "deep"), ('{"a":' * 50000 + "1" + "}" * 50000, "deep"),
            ("NaN", "JSON object"), ('{"seed": NaN}', "seed"), ('{"loss": {"alpha": Infinity}}', "loss.alpha"),
            # budgets: each message names the variable that raises it
            ('{"data": {"n_samples": 100000}, "optim": {"epochs": 1000}}', "KD_MAX_SAMPLE_EPOCHS"),
            ('{"teacher": {"name": "mlp", "params": {"hidden": [20000, 20000]}}}', "KD_MAX_PARAMS"),
            ('{"data": {"n_samples": 1000000000}}', "KD_MAX_SAMPLES"),
            ('{"student": {"name": "mlp", "params": {"hidden": [4000000]}}, "optim": {"batch_size": 512}}',
             "KD_MAX_ACTIVATION_MB")]):
        out.append((base + ["run", cfg_file(f"file{i}.json", content)], needle))
    out.append((base + ["run", str(tmp)], str(tmp)))  # a directory
    out.append((base + ["run", str(tmp / "missing.json")], "missing.json"))
    out.append((base + ["compare", cfg_file("arr.json", "[1]")], "JSON object"))
    # --set that cannot apply
    for args, needle in [
            (["--set", "foo"], "--set"), (["--set", "=1"], "--set"), (["--set", "a..b=1"], "--set"),
            (["--set", "teacher.params.hidden.0=5"], "hidden"), (["--set", "data=[1]", "--set", "data.name=x"], "data"),
            (["--set", "teacher_weights.0=1"], "teacher_weights"), (["--set", "seed=1e400"], "seed"),
            (["--set", "name.x=1"], "name")]:
        out.append((base + ["run"] + args, needle))
    # other CLI calls
    file_dir = cfg_file("not_a_dir", "x")
    for argv, needle in [
            (["runs", "show", "abc"], "abc"), (["runs", "delete", "abc"], "abc"), (["runs", "config", "abc"], "abc"),
            (["runs", "show", "-1"], "-1"), (["runs", "show", "1e3"], "1e3"), (["runs", "delete", "99999"], "99999"),
            (["runs", "show", "99999"], "99999"), (["runs", "config", "99999"], "99999"),
            (["runs", "show", "99999999999999999999999"], "99999999999999999999999"),
            (["runs", "show"], "run id"), (["runs", "delete"], "run id"), (["runs", "resume"], "runs"),
            (["runs", "export", "--ids", "abc"], "--ids"), (["runs", "export", "--ids", "1,,2"], "--ids"),
            (["runs", "export", "--ids", "99999"], "99999"),
            (["runs", "export", "--out", str(tmp / "no" / "such" / "dir" / "x.csv")], "x.csv"),
            (["runs", "export", "--out", str(tmp)], str(tmp)),
            (["compress", "abc"], "abc"), (["compress", "99999"], "99999"), (["compress", "-3"], "-3"),
            (["compress", "1", "--phase", "../../etc/passwd"], "--phase"),
            (["compress", "1", "--phase", "/etc/passwd"], "--phase"), (["compress", "1", "--prune", "abc"], "--prune"),
            (["compress", "1", "--prune", "2"], "--prune"), (["compress", "1", "--prune", "nan"], "--prune"),
            (["compress", "1", "--scope", "all"], "--scope"),
            (["compare", "--seeds", "abc"], "--seeds"),
            (["run", "--nproc", "0"], "--nproc"), (["run", "--nproc", "-1"], "--nproc"),
            (["run", "--nproc", "1000"], "--nproc"), (["run", "--nproc", "x"], "--nproc"),
            (["run", "--log-every", "-1"], "--log-every"), (["run", "--device", "cuda:abc"], "device"),
            (["run", "--data-dir", ""], "data_dir"), (["methods", "nope"], "nope"),
            (["frobnicate"], "frobnicate"), ([], "command"), (["run", "--bogus"], "--bogus"),
            (["runs", "frob"], "frob")]:
        out.append((base + argv, needle))
    out.append((["--runs-dir", file_dir, "runs", "list"], "not_a_dir"))
    out.append((["--runs-dir", file_dir, "run"], "not_a_dir"))
    out.append((["--runs-dir", str(Path(file_dir) / "sub"), "runs", "list"], "not_a_dir"))
    if os.path.exists("/dev/full"):  # a full disk
        out.append((base + ["runs", "export", "--out", "/dev/full"], "/dev/full"))
    return out


def run_case(argv: list[str], capsys) -> tuple[int, str, str]:
    """Run the CLI in-process; a SystemExit (argparse) counts as its code."""
    from kdcore.cli import main

    try:
        rc = main(argv)
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else 1
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def check(rc: int, out: str, err: str, needle: str) -> str | None:
    """Why a case failed, or None when it was refused properly."""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    if "Traceback" in err or "Traceback" in out:
        return "traceback"
    if rc == 0:
        return "exit 0"
    if len(lines) != 1:
        return f"{len(lines)} lines on stderr"
    if not lines[0].startswith("error: "):
        return "no 'error:' prefix"
    if lines[0].startswith("error: unexpected"):
        return "caught only by the last-resort handler"
    if needle.lower() not in lines[0].lower():
        return f"message does not name {needle!r}"
    return None


def history_runs(tmp: Path) -> int:
    import sqlite3

    db = tmp / "runs" / "history.sqlite"
    if not db.exists():
        return 0
    with sqlite3.connect(db) as c:
        return c.execute("SELECT COUNT(*) FROM runs").fetchone()[0]


def test_every_malformed_call_is_one_line_naming_the_field(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("KD_RUNS_DIR", str(tmp_path / "runs"))
    all_cases = cases(tmp_path)
    assert len(all_cases) >= 150
    bad = []
    for argv, needle in all_cases:
        rc, out, err = run_case(argv, capsys)
        why = check(rc, out, err, needle)
        if why:
            shown = [Path(a).read_text("utf-8", "replace")[:80] if a.endswith(".json") and Path(a).is_file()
                     else a[:80] for a in argv[2:]]
            bad.append(f"{' '.join(shown)}: {why}: {err.strip()[:300]!r}")
    assert not bad, f"{len(bad)} of {len(all_cases)} cases:\n" + "\n".join(bad)
    assert history_runs(tmp_path) == 0  # nothing refused up front reached the history
