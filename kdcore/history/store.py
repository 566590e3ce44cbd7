"""Run history: one SQLite file plus a folder of state_dicts per run.

Layout under ``root`` (default ``./runs`` or ``$KD_RUNS_DIR``)::

    history.sqlite          runs, epochs, steps
    <run_id>/<phase>.pt     trained weights with their model card ({"state_dict", "card"}, see
                            kdcore.history.weights.load_model_file), loaded with weights_only=True; the same
                            weights saved again (a reused teacher or baseline in every sweep cell,
                            a ``run:<id>`` teacher) become a hard link to the first file
    <run_id>/<name>.npz     artifacts: named numeric arrays (e.g. decision-boundary snapshots)
    <run_id>/checkpoints/<phase>.pt
                            the last finished epoch of a phase (weights, optimiser, schedule,
                            generators), kept while the run is unfinished so it can be resumed

Epoch rows are committed as each epoch ends and step rows with them, so a crash loses at most
the epoch in progress. Every method opens its own short-lived connection, so a training worker
thread and the page that reads it never share one.

A run records who trains it (pid, host) and a heartbeat that a daemon thread of that process
renews every ``HEARTBEAT_S`` seconds while the run is open. Opening or listing the history
marks ``running`` runs whose process is gone (same host, pid dead) or whose heartbeat is older
than ``STALE_S`` as ``interrupted``; their finished epochs stay, and ``kdcore.train.experiment.resume``
trains such a run on from its checkpoints.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from ..lazy import pandas as pd  # imported on first use: start-up stays fast
import torch

from ..errors import ConfigError, StoreUnavailable
from ..events import EpochEnd, Event, PhaseEnd, PhaseStart, RunEnd, StepEnd

__all__ = ["RunStore", "default_runs_dir", "run_row"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,            -- run | compare | sweep
    grp TEXT,                      -- shared by the runs of one compare/sweep
    name TEXT,
    config TEXT NOT NULL,          -- JSON of the RunConfig
    status TEXT NOT NULL,          -- running | completed | stopped | diverged | failed | interrupted
    message TEXT DEFAULT '',
    created REAL NOT NULL,
    finished REAL,
    metrics TEXT                   -- JSON of the final test metrics per phase
);
CREATE TABLE IF NOT EXISTS epochs (
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    phase TEXT NOT NULL, epoch INTEGER NOT NULL,
    train_loss REAL, train_acc REAL, val_loss REAL, val_acc REAL, seconds REAL,
    terms TEXT,
    PRIMARY KEY (run_id, phase, epoch)
);
CREATE TABLE IF NOT EXISTS steps (
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    phase TEXT NOT NULL, step INTEGER NOT NULL, epoch INTEGER NOT NULL,
    loss REAL, terms TEXT,
    PRIMARY KEY (run_id, phase, step)
);
CREATE TABLE IF NOT EXISTS weights (
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    phase TEXT NOT NULL,           -- the file is <run_id>/<phase>.pt
    sha TEXT NOT NULL,             -- of the tensors (names, dtypes, shapes, bytes): equal = same weights
    PRIMARY KEY (run_id, phase)
);
CREATE INDEX IF NOT EXISTS weights_sha ON weights(sha);
CREATE INDEX IF NOT EXISTS runs_status ON runs(status);
CREATE TABLE IF NOT EXISTS artifacts (
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    name TEXT NOT NULL,            -- e.g. boundaries; the file is <run_id>/<name>.npz
    bytes INTEGER NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (run_id, name)
);
"""


_ARTIFACT_NAME = re.compile(r"[a-z0-9_]{1,40}")
PHASE_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")  # a phase names a file: never a path


def _state_sha(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 of a state_dict's names, dtypes, shapes and raw bytes (not of its file)."""
    h = hashlib.sha256()
    for k in sorted(state):
        v = state[k].contiguous()
        h.update(f"{k}|{v.dtype}|{tuple(v.shape)}|".encode())
        h.update(v.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


# columns added after the first release: (name, SQL type); added to older history files on open
_RUN_COLUMNS = (("pid", "INTEGER"), ("host", "TEXT"), ("heartbeat", "REAL"), ("owner", "TEXT"))
HEARTBEAT_S = 15.0  # how often a process renews the heartbeat of the runs it trains
STALE_S = 120.0  # a running run whose heartbeat is older than this has lost its process
HOST = socket.gethostname()
RESUMABLE = ("interrupted", "stopped")  # a run left so keeps its checkpoints and can be resumed


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    try:  # a killed child its parent has not reaped yet is a zombie: gone for us
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


class _Heartbeat:
    """One daemon thread per process renewing the heartbeat of every run this process trains."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs: dict[tuple[str, int], "RunStore"] = {}
        self._thread: threading.Thread | None = None

    def add(self, store: "RunStore", run_id: int) -> None:
        with self._lock:
            self._runs[(store.key, run_id)] = store
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="kd-heartbeat", daemon=True)
                self._thread.start()

    def remove(self, store: "RunStore", run_id: int) -> None:
        with self._lock:
            self._runs.pop((store.key, run_id), None)

    def active(self, store: "RunStore") -> set[int]:
        with self._lock:
            return {rid for (key, rid) in self._runs if key == store.key}

    def _loop(self) -> None:
        while True:
            time.sleep(HEARTBEAT_S)
            with self._lock:
                items = list(self._runs.items())
            for (_, rid), store in items:
                try:
                    with store._db() as db:
                        db.execute("UPDATE runs SET heartbeat=? WHERE id=? AND status='running'",
                                   (time.time(), rid))
                except Exception:  # a full disk now is a missed beat, not a dead thread
                    pass


_BEAT = _Heartbeat()


def default_runs_dir() -> Path:
    return Path(os.environ.get("KD_RUNS_DIR", "runs"))


class RunStore:
    """The run history in ``root/history.sqlite``."""

    def __init__(self, root: str | os.PathLike | None = None, *, owner: str | None = None):
        """Open (or create) the history in ``root``.

        Args:
            owner: who files the runs made through this object (a browser session's id); the
                runs it creates carry it and :meth:`delete` can be limited to it.
        Raises:
            StoreUnavailable: the folder is a file, read-only or full; the message says what to do.
        """
        self.root = Path(root) if root is not None else default_runs_dir()
        self.owner = owner
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise StoreUnavailable(f"the run history folder {self.root} is (inside) a file, not a folder; "
                                   "point KD_RUNS_DIR or --runs-dir at a folder") from None
        except OSError as e:
            raise StoreUnavailable(f"cannot create the run history folder {self.root}: {e.strerror}; "
                                   "point KD_RUNS_DIR or --runs-dir at a writable folder") from None
        self.path = self.root / "history.sqlite"
        self.key = str(self.path.resolve())  # one history, however its folder was named
        with self._db() as db:
            db.executescript(_SCHEMA)
            have = {r[1] for r in db.execute("PRAGMA table_info(runs)")}
            for col, typ in _RUN_COLUMNS:
                if col not in have:
                    db.execute(f"ALTER TABLE runs ADD COLUMN {col} {typ}")
        self.reap()

    def _connect(self) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(self.path, timeout=30)
        except sqlite3.Error as e:
            raise self._unavailable(e) from None
        db.row_factory = sqlite3.Row
        try:
            db.execute("PRAGMA foreign_keys = ON")
            db.execute("PRAGMA journal_mode = WAL")
            # WAL's NORMAL: a commit is not synced to the disk on its own (the log is, at its
            # checkpoints): a killed process loses nothing committed, only a power cut can lose
            # the newest commits
            db.execute("PRAGMA synchronous = NORMAL")
        except (sqlite3.OperationalError, sqlite3.DatabaseError) as e:
            db.close()
            raise self._unavailable(e) from None
        return db

    @contextmanager
    def _transaction(self, db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
        """Commits on success, rolls back on error; SQLite's errors become StoreUnavailable."""
        try:
            with db:
                yield db
        except (sqlite3.OperationalError, sqlite3.DatabaseError) as e:
            if isinstance(e, sqlite3.IntegrityError):
                raise
            raise self._unavailable(e) from None

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        db = self._connect()
        try:
            with self._transaction(db):
                yield db
        finally:
            db.close()

    def _unavailable(self, e: Exception) -> StoreUnavailable:
        text = str(e)
        if "readonly" in text or "read-only" in text:
            hint = "it is read-only: make it writable or point KD_RUNS_DIR / --runs-dir at a writable folder"
        elif "full" in text:
            hint = "the disk is full: free space or point KD_RUNS_DIR / --runs-dir at another disk"
        elif "unable to open" in text:
            hint = "it cannot be opened: check that the folder exists and is writable"
        elif "locked" in text:
            hint = "another process holds it locked; try again in a moment"
        else:
            hint = "it may be damaged: move it away to start a new history"
        return StoreUnavailable(f"the run history {self.path} cannot be used ({text}); {hint}")

    # -- who trains what ---------------------------------------------------------------------
    def reap(self) -> list[int]:
        """Mark runs whose trainer is gone as ``interrupted``; their finished epochs stay.

        A ``running`` run is gone when it was started on this host by a process that no longer
        exists, or when its heartbeat (renewed every HEARTBEAT_S by the training process) is older
        than STALE_S. Returns the ids marked.
        """
        now, mine = time.time(), _BEAT.active(self)
        with self._db() as db:
            rows = db.execute("SELECT id, pid, host, heartbeat, created FROM runs WHERE status='running'").fetchall()
        gone = []
        for r in rows:
            beat = r["heartbeat"] or r["created"]
            if r["id"] in mine:
                continue
            if (r["host"] == HOST and (r["pid"] == os.getpid() or not _pid_alive(r["pid"]))) \
                    or now - beat > STALE_S:
                gone.append(r)
        for r in gone:
            with self._db() as db:
                n = db.execute("SELECT COUNT(*) FROM epochs WHERE run_id=?", (r["id"],)).fetchone()[0]
                who = f"process {r['pid']} on {r['host']}" if r["pid"] else "its process"
                db.execute("UPDATE runs SET status='interrupted', finished=?, message=? "
                           "WHERE id=? AND status='running'",
                           (now, f"interrupted: {who} ended without finishing it; its {n} finished "
                                 "epoch(s) are kept", r["id"]))
        return [r["id"] for r in gone]

    def is_training(self, run_id: int) -> bool:
        """Whether some process still trains this run (after reaping the ones that are gone)."""
        self.reap()
        return self.get(run_id)["status"] == "running"

    # -- writing -----------------------------------------------------------------------------
    def create_run(self, config: dict, *, kind: str = "run", group: str | None = None,
                   name: str = "") -> int:
        """Insert a run in status 'running', owned by this process (pid, host, heartbeat), and return its id."""
        now = time.time()
        with self._db() as db:
            cur = db.execute(
                "INSERT INTO runs (kind, grp, name, config, status, created, pid, host, heartbeat, owner) "
                "VALUES (?,?,?,?,?,?,?,?,?,?)",
                (kind, group, name or config.get("name", ""), json.dumps(config), "running", now,
                 os.getpid(), HOST, now, self.owner))
            run_id = int(cur.lastrowid)
        _BEAT.add(self, run_id)
        return run_id

    def finish_run(self, run_id: int, status: str, message: str, metrics: dict) -> None:
        """Record how a run ended; a finished run's checkpoints go (a stopped one keeps them to resume)."""
        _BEAT.remove(self, run_id)
        if status not in RESUMABLE:
            self.drop_checkpoints(run_id)
        with self._db() as db:
            db.execute("UPDATE runs SET status=?, message=?, finished=?, metrics=? WHERE id=?",
                       (status, message, time.time(), json.dumps(metrics), run_id))

    def reopen_run(self, run_id: int) -> dict:
        """Take over an ``interrupted`` or ``stopped`` run to resume it: it is ``running`` again,
        trained by this process. Returns its row as it was.

        Raises:
            KeyError: no such run. ConfigError: it is not interrupted or stopped (it finished,
                failed, diverged, or another process trains or just resumed it).
        """
        run = self.resumable(run_id)
        now = time.time()
        with self._db() as db:
            taken = db.execute("UPDATE runs SET status='running', finished=NULL, pid=?, host=?, heartbeat=? "
                               f"WHERE id=? AND status IN ({','.join('?' * len(RESUMABLE))})",
                               (os.getpid(), HOST, now, run_id, *RESUMABLE)).rowcount
        if not taken:  # another process resumed it since
            self.resumable(run_id)
        _BEAT.add(self, run_id)
        return run

    def resumable(self, run_id: int) -> dict:
        """The run's row, if it is ``interrupted`` or ``stopped`` (after reaping).

        Raises:
            KeyError: no such run. ConfigError: any other status, said in one line.
        """
        self.reap()
        run = self.get(run_id)
        if run["status"] not in RESUMABLE:
            raise ConfigError(f"run {run_id} is {run['status']}; only {' or '.join(RESUMABLE)} runs can be "
                              "resumed")
        return run

    def checkpoint_path(self, run_id: int, phase: str) -> Path:
        """Where the last finished epoch of ``phase`` is kept while the run is unfinished."""
        w = self.weights_path(run_id, phase)  # checks the phase name
        return w.parent / "checkpoints" / w.name

    def save_checkpoint(self, run_id: int, phase: str, state: dict) -> None:
        """Replace ``phase``'s checkpoint atomically: a kill mid-write leaves the previous one whole."""
        path = self.checkpoint_path(run_id, phase)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            torch.save(state, tmp)
            os.replace(tmp, path)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise StoreUnavailable(f"cannot write the checkpoint {path}: {e.strerror}; free space or point "
                                   "KD_RUNS_DIR / --runs-dir at a writable folder") from None

    def load_checkpoint(self, run_id: int, phase: str) -> dict | None:
        """``phase``'s last checkpoint (tensors and plain values only), or None when there is none."""
        path = self.checkpoint_path(run_id, phase)
        if not path.is_file():
            return None
        return torch.load(path, map_location="cpu", weights_only=True)

    def drop_checkpoints(self, run_id: int) -> None:
        shutil.rmtree(self.run_dir(run_id) / "checkpoints", ignore_errors=True)

    def recorder(self, run_id: int) -> "Recorder":
        """A callback that writes this run's events as they happen."""
        return Recorder(self, run_id)

    def run_dir(self, run_id: int) -> Path:
        """The folder of one run's files (weights, artifacts, checkpoints)."""
        return self.root / str(int(run_id))

    def weights_path(self, run_id: int, phase: str) -> Path:
        if not isinstance(phase, str) or not PHASE_NAME.fullmatch(phase):
            raise ValueError(f"phase {phase!r} must be lowercase letters, digits and _ (a model name)")
        return self.run_dir(run_id) / f"{phase}.pt"

    def save_weights(self, run_id: int, phase: str, state_dict: dict, card: dict | None = None) -> Path:
        """Write one phase's state_dict with its model card (:func:`kdcore.history.weights.model_card`), so the
        file rebuilds its model without this history; weights already on disk under another run are
        hard-linked (the card is then the one of the run that trained them)."""
        from .weights import card_file

        state = {k: v.detach().cpu() for k, v in state_dict.items()}
        sha = _state_sha(state)
        path = self.weights_path(run_id, phase)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.unlink(missing_ok=True)
        with self._db() as db:
            same = db.execute("SELECT run_id, phase FROM weights WHERE sha=? AND NOT (run_id=? AND phase=?)",
                              (sha, run_id, phase)).fetchall()
        for r in same:
            try:
                os.link(self.weights_path(r["run_id"], r["phase"]), tmp)
                break
            except OSError:  # deleted since, or a file system without hard links: try the next
                continue
        else:
            torch.save(card_file(state, card or {}), tmp)
        tmp.replace(path)  # atomic: a reader never sees half a file
        with self._db() as db:
            db.execute("INSERT OR REPLACE INTO weights (run_id, phase, sha) VALUES (?,?,?)", (run_id, phase, sha))
        return path

    def load_weights(self, run_id: int, phase: str) -> dict:
        """The saved state_dict of one phase's model; KeyError if the run has none."""
        path = self.weights_path(run_id, phase)
        if not path.exists():
            raise KeyError(f"run {run_id} has no saved {phase} weights (looked for {path})")
        from .weights import unwrap

        return unwrap(torch.load(path, map_location="cpu", weights_only=True), path.name)[0]

    def artifact_path(self, run_id: int, name: str) -> Path:
        if not _ARTIFACT_NAME.fullmatch(name):
            raise ValueError(f"artifact name {name!r} must be lowercase letters, digits and _ "
                             "(at most 40 characters)")
        return self.run_dir(run_id) / f"{name}.npz"

    def save_artifact(self, run_id: int, name: str, arrays: dict[str, np.ndarray]) -> Path:
        """Store named numeric arrays with a run as ``<run_id>/<name>.npz`` (compressed).

        Args:
            run_id: the run they belong to. name: lowercase identifier, e.g. ``boundaries``.
            arrays: plain numeric arrays (no objects: they are read back without pickle).
        Returns:
            The file's path.
        """
        path = self.artifact_path(run_id, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{name}.{os.getpid()}.tmp.npz")
        np.savez_compressed(tmp, **{k: np.asarray(v) for k, v in arrays.items()})
        tmp.replace(path)  # atomic: a reader never sees half a file
        with self._db() as db:
            db.execute("INSERT OR REPLACE INTO artifacts VALUES (?,?,?,?)",
                       (run_id, name, path.stat().st_size, time.time()))
        return path

    def load_artifact(self, run_id: int, name: str) -> dict[str, np.ndarray]:
        """The arrays saved by :meth:`save_artifact`; KeyError if the run has no such artifact."""
        path = self.artifact_path(run_id, name)
        if not path.exists():
            raise KeyError(f"run {run_id} has no artifact {name!r}")
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}

    def artifacts(self, run_id: int) -> dict[str, int]:
        """Artifact name -> size in bytes for one run."""
        with self._db() as db:
            rows = db.execute("SELECT name, bytes FROM artifacts WHERE run_id=? ORDER BY name",
                              (run_id,)).fetchall()
        return {r["name"]: r["bytes"] for r in rows}

    def delete(self, run_id: int, *, owner: str | None = None) -> None:
        """Delete a run, its rows and its files; an upload it used goes with the last run using it.

        Args:
            owner: when given, only a run filed with this owner may be deleted.
        Raises:
            KeyError: no such run. ConfigError: a process still trains it, or it is not ``owner``'s.
        """
        run = self.get(run_id)  # KeyError names the id
        if self.is_training(run_id):
            raise ConfigError(f"run {run_id} is being trained by process {run['pid']} on {run['host']}; "
                              "stop it (or wait for it to finish) before deleting it")
        if owner is not None and run.get("owner") != owner:
            raise ConfigError(f"run {run_id} was started by another session; a session deletes only "
                              "its own runs on a shared server")
        with self._db() as db:
            db.execute("DELETE FROM runs WHERE id=?", (run_id,))
        shutil.rmtree(self.run_dir(run_id), ignore_errors=True)
        self._drop_unused_uploads(run["config"])

    def _drop_unused_uploads(self, config: dict) -> None:
        """Remove the uploads (``uploads/<sha256>.pt``) this config used that no run uses any more."""
        uploads = (self.root / "uploads").resolve()
        sources = [config.get("teacher_source", ""), *(config.get("extra_teacher_sources") or ())]
        for src in sources:
            if not isinstance(src, str) or not src.startswith("file:"):
                continue
            path = Path(src[5:]).resolve()
            if path.parent != uploads:
                continue  # a file the user named on the command line is theirs, not ours
            with self._db() as db:
                used = db.execute("SELECT COUNT(*) FROM runs WHERE config LIKE ?",
                                  (f"%{path.name}%",)).fetchone()[0]
            if not used:
                path.unlink(missing_ok=True)

    # -- reading -----------------------------------------------------------------------------
    def get(self, run_id: int) -> dict:
        """One run as a dict with ``config`` and ``metrics`` decoded; KeyError if absent."""
        with self._db() as db:
            row = db.execute("SELECT * FROM runs WHERE id=?", (run_id,)).fetchone()
        if row is None:
            raise KeyError(f"no run with id {run_id}")
        return _decode(row)

    def list(self, *, status: str | None = None, kind: str | None = None,
             group: str | None = None) -> list[dict]:
        """Runs, newest first, optionally filtered (runs whose trainer is gone read ``interrupted``)."""
        self.reap()
        where, args = [], []
        for col, val in (("status", status), ("kind", kind), ("grp", group)):
            if val is not None:
                where.append(f"{col}=?")
                args.append(val)
        sql = "SELECT * FROM runs" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id DESC"
        with self._db() as db:
            return [_decode(r) for r in db.execute(sql, args).fetchall()]

    def table(self, **filters) -> pd.DataFrame:
        """Flat summary table of runs: one row per run with the headline numbers."""
        return pd.DataFrame([run_row(r) for r in self.list(**filters)])

    def epochs(self, run_id: int) -> pd.DataFrame:
        with self._db() as db:
            rows = db.execute("SELECT * FROM epochs WHERE run_id=? ORDER BY rowid", (run_id,)).fetchall()
        return _frame(rows)

    def phase_history(self, run_id: int, phase: str) -> list[dict[str, Any]]:
        """One phase's finished epochs as :func:`kdcore.train.trainer.fit` reports them (one dict per
        epoch: epoch, train_loss, terms, train_acc, val_loss, val_acc, seconds)."""
        with self._db() as db:
            rows = db.execute("SELECT epoch, train_loss, terms, train_acc, val_loss, val_acc, seconds FROM epochs "
                              "WHERE run_id=? AND phase=? ORDER BY epoch", (run_id, phase)).fetchall()
        return [{**dict(r), "terms": json.loads(r["terms"] or "{}")} for r in rows]

    def steps(self, run_id: int) -> pd.DataFrame:
        with self._db() as db:
            rows = db.execute("SELECT * FROM steps WHERE run_id=? ORDER BY rowid", (run_id,)).fetchall()
        return _frame(rows)

    def epochs_table(self, run_ids: list[int] | None = None) -> pd.DataFrame:
        """Per-epoch metrics of the given runs (all runs if None), each row with its run's status and
        config (JSON); runs without epochs add no rows. What the CLI's export and the Runs page's
        CSV download write."""
        ids = run_ids if run_ids is not None else [r["id"] for r in self.list()]
        frames = []
        for rid in ids:
            run = self.get(rid)
            df = self.epochs(rid)
            if df.empty:
                continue
            df["status"] = run["status"]
            df["config"] = json.dumps(run["config"], sort_keys=True)
            frames.append(df)
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
            columns=["run_id", "phase", "epoch", "train_loss", "train_acc", "val_loss", "val_acc"])

    def export_csv(self, path: str | os.PathLike, run_ids: list[int] | None = None) -> Path:
        """Write :meth:`epochs_table` of the given runs (all runs if None) as CSV."""
        self.epochs_table(run_ids).to_csv(path, index=False)
        return Path(path)


def run_row(r: dict) -> dict:
    """One run of the history (as :meth:`RunStore.get` returns it) as a flat row: its setup and each
    model's test accuracy (None where missing). :meth:`RunStore.table`, the Runs page's comparison
    and a stored sweep's cells are made of these."""
    c, m = r["config"], r["metrics"] or {}
    row = {"id": r["id"], "kind": r["kind"], "group": r["grp"], "name": r["name"],
           "status": r["status"], "created": pd.Timestamp(r["created"], unit="s"),
           "dataset": c["data"]["name"], "teacher": c["teacher"]["name"],
           "student": c["student"]["name"], "loss": c["loss"]["name"],
           "T": c["loss"]["temperature"], "alpha": c["loss"]["alpha"], "seed": c["seed"]}
    for phase in ("teacher", "baseline", "distilled"):
        row[f"{phase}_acc"] = (m.get(phase) or {}).get("accuracy")
    return row


def _decode(row: sqlite3.Row) -> dict:
    d = dict(row)
    d["config"] = json.loads(d["config"])
    d["metrics"] = json.loads(d["metrics"]) if d["metrics"] else None
    return d


def _frame(rows: list[sqlite3.Row]) -> pd.DataFrame:
    if not rows:
        return pd.DataFrame()
    df = pd.DataFrame([dict(r) for r in rows])
    terms = pd.DataFrame([json.loads(t or "{}") for t in df.pop("terms")])
    return pd.concat([df, terms.add_prefix("term_")], axis=1)


class Recorder:
    """Callback writing events to the store: steps buffered and committed with their epoch.

    It keeps one connection for its run's phase (opened when the phase starts, closed at its
    end): closing a WAL database's last connection checkpoints the log into the file, which cost
    0.4 of the 1.0 ms that filing an epoch took with a connection per epoch, more than a tiny
    student's epoch (``python benchmarks/bench_store.py``). A commit per epoch stays: a killed
    run keeps every epoch it finished.
    """

    def __init__(self, store: RunStore, run_id: int):
        self.store, self.run_id = store, run_id
        self._steps: list[tuple[Any, ...]] = []
        self._db: sqlite3.Connection | None = None

    def __call__(self, ev: Event) -> None:
        if isinstance(ev, StepEnd):
            self._steps.append((self.run_id, ev.phase, ev.step, ev.epoch, ev.loss, json.dumps(ev.terms)))
        elif isinstance(ev, PhaseStart):  # opened before the phase's first step: its epochs pay commits only
            self.close()
            self._db = self.store._connect()
        elif isinstance(ev, EpochEnd):
            if self._db is None:
                self._db = self.store._connect()
            try:
                with self.store._transaction(self._db) as db:
                    db.executemany("INSERT OR REPLACE INTO steps VALUES (?,?,?,?,?,?)", self._steps)
                    db.execute("INSERT OR REPLACE INTO epochs VALUES (?,?,?,?,?,?,?,?,?)",
                               (self.run_id, ev.phase, ev.epoch, ev.train_loss, ev.train_acc, ev.val_loss,
                                ev.val_acc, ev.seconds, json.dumps(ev.terms)))
            except BaseException:
                self.close()
                raise
            self._steps.clear()
        elif isinstance(ev, (PhaseEnd, RunEnd)):
            self._steps.clear()  # steps of an unfinished epoch are not kept
            self.close()

    def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            db.close()
