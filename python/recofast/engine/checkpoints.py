"""Versioned, atomic checkpoints of the engine: ``model-dir/v000123/`` holds the model
snapshot (``model.bin``), the engine state (``state.msgpack``: dedupe window, popularity
counters) and ``manifest.json`` (stream sequence, counters, time, checksums).

A checkpoint is written into a hidden temporary folder, fsynced, then renamed into place,
so a folder named ``vNNNNNN`` is always complete; one that fails its checksums anyway is
skipped with a log line. The last ``keep`` checkpoints are retained.

>>> import tempfile, recofast
>>> store = CheckpointStore(tempfile.mkdtemp(), keep=2)
>>> rec = recofast.Recommender(dim=8, seed=1)
>>> rec.learn_one("u", "mug")
>>> store.save(rec, {"stream_seq": 10, "events_applied_total": 1}).version
1
>>> got = store.load_latest()
>>> got.manifest["stream_seq"], got.model.events_learned
(10, 1)
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recofast.errors import CheckpointError, RecofastError, SnapshotError
from recofast.recommender import Recommender

log = logging.getLogger("recofast.engine.checkpoints")

MANIFEST_FORMAT = 1
_NAME = re.compile(r"^v(\d{6,})$")
MODEL_FILE = "model.bin"
STATE_FILE = "state.msgpack"
MANIFEST_FILE = "manifest.json"
LOCK_FILE = ".lock"


@dataclass
class Checkpoint:
    version: int
    path: Path
    manifest: dict[str, Any]
    model: Recommender | None = None
    state: bytes = b""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def _lock_of(root: Path) -> threading.Lock:
    """The one lock of a checkpoint folder in this process (every store on it shares it)."""
    key = os.path.realpath(root)
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(key, threading.Lock())


class CheckpointStore:
    def __init__(self, root: str | os.PathLike[str], keep: int = 5) -> None:
        if keep < 1:
            raise ValueError("keep must be at least 1")
        self.root = Path(root)
        self.keep = keep
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = _lock_of(self.root)

    def versions(self) -> list[int]:
        """Checkpoint versions present, oldest first (complete folders only)."""
        out = []
        for p in self.root.iterdir():
            m = _NAME.match(p.name)
            if m and p.is_dir():
                out.append(int(m.group(1)))
        return sorted(out)

    def path(self, version: int) -> Path:
        return self.root / f"v{version:06d}"

    def read_manifest(self, version: int) -> dict[str, Any]:
        p = self.path(version) / MANIFEST_FILE
        try:
            m = json.loads(p.read_text())
        except (OSError, ValueError) as e:
            raise CheckpointError(f"v{version:06d}: unreadable manifest: {e}") from None
        if not isinstance(m, dict) or m.get("format") != MANIFEST_FORMAT:
            raise CheckpointError(f"v{version:06d}: unknown manifest format {m.get('format') if isinstance(m, dict) else m!r}")
        return m

    def load(self, version: int) -> Checkpoint:
        """Loads and verifies one checkpoint; raises :class:`CheckpointError` if it is bad."""
        path = self.path(version)
        m = self.read_manifest(version)
        for name, digest in m.get("sha256", {}).items():
            f = path / name
            if not f.is_file() or _sha256(f) != digest:
                raise CheckpointError(f"v{version:06d}: {name} is missing or fails its checksum")
        try:
            model = Recommender.load(path / MODEL_FILE)
        except (SnapshotError, OSError) as e:
            raise CheckpointError(f"v{version:06d}: {e}") from None
        state_path = path / STATE_FILE
        state = state_path.read_bytes() if state_path.is_file() else b""
        return Checkpoint(version, path, m, model, state)

    def load_latest(self) -> Checkpoint | None:
        """The newest checkpoint that loads; bad ones are skipped with a log line."""
        for v in reversed(self.versions()):
            try:
                return self.load(v)
            except CheckpointError as e:
                log.warning("skipping corrupt checkpoint: %s", e)
        return None

    def save(self, model: Recommender, manifest: dict[str, Any], state: bytes = b"") -> Checkpoint:
        """Writes the next version atomically and prunes old ones. When the write fails (a
        full disk), the temporary folder is removed, the previous checkpoints stay as they
        were, and :class:`CheckpointError` says why. Saves into one folder from several
        threads of a process take turns (each would otherwise take the same next version
        and the same temporary folder)."""
        with self._lock:
            return self._save(model, manifest, state)

    def _save(self, model: Recommender, manifest: dict[str, Any], state: bytes) -> Checkpoint:
        versions = self.versions()
        version = (versions[-1] + 1) if versions else 1
        tmp = self.root / f".tmp-v{version:06d}-{os.getpid()}"
        try:
            m = self._write_folder(tmp, model, manifest, state, version)
            final = self.path(version)
            os.rename(tmp, final)
            _fsync_dir(self.root)
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            raise CheckpointError(f"could not write checkpoint v{version:06d} in {self.root}: {e}") from e
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self.prune()
        return Checkpoint(version, final, m, model, state)

    def _write_folder(self, tmp: Path, model: Recommender, manifest: dict[str, Any], state: bytes, version: int) -> dict[str, Any]:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        model.save(tmp / MODEL_FILE)
        _write(tmp / STATE_FILE, state)
        m = dict(manifest)
        m.update(
            format=MANIFEST_FORMAT,
            version=version,
            time=m.get("time", time.time()),
            events_learned=model.events_learned,
            n_users=model.n_users,
            n_items=model.n_items,
            sha256={MODEL_FILE: _sha256(tmp / MODEL_FILE), STATE_FILE: _sha256(tmp / STATE_FILE)},
        )
        _write(tmp / MANIFEST_FILE, json.dumps(m, indent=1, sort_keys=True).encode())
        _fsync_dir(tmp)
        return m

    def erase_users(self, users: list[str], clean_state: Callable[[bytes], bytes] | None = None) -> int:
        """Rewrites every kept checkpoint without ``users`` (the right to erasure): each
        model forgets them and ``clean_state`` rewrites the engine state. A checkpoint is
        rebuilt in a temporary folder and swapped in whole. Returns the checkpoints rewritten;
        corrupt ones are deleted (they cannot be cleaned, nor would they load)."""
        with self._lock:
            return self._erase(users, clean_state)

    def _erase(self, users: Any, clean_state: Any) -> int:
        done = 0
        for v in self.versions():
            try:
                cp = self.load(v)
            except CheckpointError as e:
                log.warning("erasure: deleting corrupt checkpoint that cannot be cleaned: %s", e)
                shutil.rmtree(self.path(v), ignore_errors=True)
                continue
            assert cp.model is not None
            cp.model.forget(users)
            state = clean_state(cp.state) if clean_state is not None else cp.state
            keep = {k: x for k, x in cp.manifest.items() if k not in ("format", "version", "sha256", "events_learned", "n_users", "n_items")}
            tmp = self.root / f".tmp-v{v:06d}-{os.getpid()}"
            old = self.root / f".old-v{v:06d}-{os.getpid()}"
            try:
                self._write_folder(tmp, cp.model, keep, state, v)
                os.rename(self.path(v), old)
                os.rename(tmp, self.path(v))
                _fsync_dir(self.root)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
                shutil.rmtree(old, ignore_errors=True)
            done += 1
        return done

    def prune(self) -> None:
        for v in self.versions()[: -self.keep]:
            shutil.rmtree(self.path(v), ignore_errors=True)
        for p in [*self.root.glob(".tmp-v*"), *self.root.glob(".old-v*")]:  # left by a crash mid-write
            pid = p.name.rsplit("-", 1)[-1]
            if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
                shutil.rmtree(p, ignore_errors=True)

    def listing(self) -> list[dict[str, Any]]:
        """One row per checkpoint, oldest first; a bad one has an ``error``."""
        rows = []
        for v in self.versions():
            try:
                m = self.read_manifest(v)
                rows.append({"version": v, **{k: m.get(k) for k in ("time", "stream_seq", "events_applied_total", "events_learned", "rolled_back_from")}})
            except CheckpointError as e:
                rows.append({"version": v, "error": str(e)})
        return rows

    def rollback(self, version: int, replay: bool = False) -> Checkpoint:
        """Makes the model of ``version`` the newest checkpoint (a new version number).

        By default the stream position and counters stay those of the newest checkpoint:
        the model forgets what it learned after ``version`` and the engine goes on from where
        it stopped. With ``replay=True`` the new checkpoint keeps ``version``'s stream position,
        so the engine learns again the events since then.
        """
        with self.lock():
            target = self.load(version)
            latest = self.load_latest()
            assert latest is not None and target.model is not None
            m = dict(target.manifest if replay else latest.manifest)
            for k in ("format", "version", "sha256", "events_learned", "n_users", "n_items"):
                m.pop(k, None)
            m["rolled_back_from"] = latest.version
            m["model_from"] = version
            m["time"] = time.time()
            return self.save(target.model, m, target.state if replay else latest.state)

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Holds the model directory's lock (the running engine holds it too)."""
        fd = os.open(self.root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RecofastError(f"{self.root} is in use by a running engine; stop it first") from None
            yield
        finally:
            os.close(fd)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -- CLI ------------------------------------------------------------------------------------
