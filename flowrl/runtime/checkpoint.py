"""Checkpoints: written atomically, verified on load, the newest good one used to resume.

A checkpoint is a directory ``<root>/episode_XXXX`` holding one ``torch.save`` file per part
(``runner.pt``: counters, data position, replay buffer, RNG states, metrics history;
``modules/<model_name>.pt``: what ``state_dict_for_checkpoint()`` returned) and, written last,
``manifest.json`` with every file's size and SHA-256. It is assembled in a temporary sibling
directory and renamed into place, so a crash leaves either the whole checkpoint or none.
Loading checks the manifest and reads with ``torch.load(weights_only=True)`` (no arbitrary
pickles); a checkpoint that fails any check is reported and the previous one is tried.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import re
import shutil
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from flowrl.errors import FlowRLError

FORMAT = "flowrl.checkpoint/1"
MANIFEST = "manifest.json"
_NAME = re.compile(r"^episode_(\d+)$")


class CheckpointError(FlowRLError):
    """A checkpoint is incomplete, corrupt or unreadable; the message says which and why."""


class CheckpointWarning(UserWarning):
    """A checkpoint was skipped while looking for one to resume from."""


# ---- RNG state -------------------------------------------------------------------------------
def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch (CPU and CUDA) global RNG states, in ``weights_only`` types."""
    np_state = np.random.get_state()
    state = {"python": random.getstate(),
             "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """Run a block without disturbing the global RNGs (e.g. evaluation between episodes)."""
    saved = rng_state()
    try:
        yield
    finally:
        set_rng_state(saved)


# ---- files ----------------------------------------------------------------------------------
def _copy_tensors(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, dict):
        return {k: _copy_tensors(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_copy_tensors(v) for v in obj)
    return obj


@contextlib.contextmanager
def _onloaded(module: Any) -> Iterator[bool]:
    """The module's state on its device for the block (offloaded again afterwards); yields
    whether anything was offloaded."""
    kinds = tuple(module.offloaded_state)
    if kinds:
        module.onload(kinds)
    try:
        yield bool(kinds)
    finally:
        if kinds:
            module.offload(kinds)


def module_checkpoint_state(module: Any) -> dict[str, Any]:
    """A module's checkpoint state, also when (part of) it is offloaded right now."""
    with _onloaded(module) as was_offloaded:
        state = module.state_dict_for_checkpoint()
        # state dicts share storage with the live tensors, which offloading empties again
        return _copy_tensors(state) if was_offloaded else state


def load_module_checkpoint_state(module: Any, state: dict[str, Any]) -> None:
    with _onloaded(module):
        module.load_checkpoint_state(state)


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


def _save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())


def _manifest_problem(manifest: Any) -> str | None:
    """What is wrong with a manifest's shape (valid JSON is not enough); ``None`` if fine."""
    if not isinstance(manifest, dict):
        return f"expected a JSON object, got {type(manifest).__name__}"
    files, episode = manifest.get("files"), manifest.get("episode")
    if not isinstance(episode, int) or isinstance(episode, bool) or episode < 0:
        return f"'episode' must be a non-negative integer, got {episode!r}"
    if not isinstance(files, dict) or not files:
        return f"'files' must be a non-empty object, got {type(files).__name__}"
    for rel, meta in files.items():
        if not rel.endswith(".pt"):
            return f"file {rel!r}: expected a .pt file"
        if not isinstance(meta, dict) or not isinstance(meta.get("bytes"), int) or \
                not isinstance(meta.get("sha256"), str):
            return f"file {rel!r}: expected {{\"bytes\": int, \"sha256\": str}}, got {meta!r}"
    return None


@dataclass
class Checkpoint:
    """A loaded checkpoint: its episode, directory and parts (``"runner"``, ``"modules/x"``)."""

    episode: int
    path: Path
    parts: dict[str, Any]

    def modules(self) -> dict[str, Any]:
        return {k.split("/", 1)[1]: v for k, v in self.parts.items() if k.startswith("modules/")}


class CheckpointManager:
    """Saves and finds checkpoints under ``root``."""

    def __init__(self, root: str | Path, keep_last: int = 0, console: Any = None) -> None:
        self.root = Path(root)
        self.keep_last = keep_last
        self.console = console
        self.skipped: list[tuple[Path, str]] = []  # (checkpoint, why) seen by load_latest

    def path_for(self, episode: int) -> Path:
        return self.root / f"episode_{episode:04d}"

    def checkpoints(self) -> list[tuple[int, Path]]:
        """Complete-looking checkpoint directories, oldest first (temporaries excluded)."""
        if not self.root.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.root.iterdir()
                 if p.is_dir() and (m := _NAME.match(p.name))]
        return sorted(found)

    # ---- save -------------------------------------------------------------------------------
    def save(self, episode: int, parts: dict[str, Any]) -> Path:
        """Write ``parts`` (name -> object of tensors / plain Python) as checkpoint ``episode``."""
        self.root.mkdir(parents=True, exist_ok=True)
        for stale in self.root.glob(".tmp-*"):  # left behind by a crash mid-save
            shutil.rmtree(stale, ignore_errors=True)
        tmp = self.root / f".tmp-episode_{episode:04d}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        files = {}
        for name, obj in parts.items():
            rel = f"{name}.pt"
            _save(obj, tmp / rel)
            files[rel] = {"bytes": (tmp / rel).stat().st_size, "sha256": _sha256(tmp / rel)}
        manifest = {"format": FORMAT, "episode": episode, "created": time.time(), "files": files}
        with open(tmp / MANIFEST, "w") as f:  # last: its presence marks a complete write
            json.dump(manifest, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        for d in {tmp, *((tmp / r).parent for r in files)}:
            _fsync_dir(d)
        final = self.path_for(episode)
        if final.exists():  # saving the same episode again: move the old one out of the way
            old = self.root / f".tmp-old-{final.name}-{uuid.uuid4().hex[:8]}"
            os.rename(final, old)
            shutil.rmtree(old, ignore_errors=True)
        os.rename(tmp, final)
        _fsync_dir(self.root)
        self._prune()
        return final

    def _prune(self) -> None:
        if self.keep_last:
            for _, path in self.checkpoints()[:-self.keep_last]:
                shutil.rmtree(path, ignore_errors=True)

    # ---- load -------------------------------------------------------------------------------
    def verify(self, path: Path) -> dict[str, Any]:
        """The manifest of ``path`` once every file's size and SHA-256 match it."""
        mpath = path / MANIFEST
        if not mpath.is_file():
            raise CheckpointError(f"checkpoint {path} is incomplete: no {MANIFEST} (the save was "
                                  f"interrupted)")
        try:
            manifest = json.loads(mpath.read_text())
        except (ValueError, UnicodeDecodeError) as e:
            raise CheckpointError(f"checkpoint {path}: unreadable {MANIFEST} ({e})") from e
        problem = _manifest_problem(manifest)
        if problem:
            raise CheckpointError(f"checkpoint {path}: malformed {MANIFEST}: {problem}")
        files, episode = manifest["files"], manifest["episode"]
        if manifest.get("format") != FORMAT:
            raise CheckpointError(f"checkpoint {path}: format {manifest.get('format')!r}, "
                                  f"expected {FORMAT!r}")
        m = _NAME.match(path.name)
        if m and int(m.group(1)) != episode:
            raise CheckpointError(f"checkpoint {path}: the manifest says episode {episode}")
        root = path.resolve()
        for rel in files:
            target = (path / rel).resolve()  # symlinks followed: the real file must be inside
            if Path(rel).is_absolute() or ".." in Path(rel).parts or \
                    not target.is_relative_to(root):
                raise CheckpointError(f"checkpoint {path}: file {rel!r} in {MANIFEST} points "
                                      f"outside the checkpoint directory")
        for rel, meta in files.items():
            f = path / rel
            if not f.is_file():
                raise CheckpointError(f"checkpoint {path}: file {rel} is missing")
            size = f.stat().st_size
            if size != meta["bytes"]:
                raise CheckpointError(f"checkpoint {path}: {rel} has {size} bytes, the manifest "
                                      f"says {meta['bytes']} (truncated?)")
            if _sha256(f) != meta["sha256"]:
                raise CheckpointError(f"checkpoint {path}: {rel} does not match its SHA-256 "
                                      f"checksum (corrupt)")
        return manifest

    def load(self, path: str | Path) -> Checkpoint:
        """Verify and read one checkpoint (``torch.load(weights_only=True)``)."""
        path = Path(path)
        manifest = self.verify(path)
        parts = {}
        for rel in manifest["files"]:
            try:
                parts[rel.removesuffix(".pt")] = torch.load(path / rel, map_location="cpu",
                                                            weights_only=True)
            except Exception as e:  # noqa: BLE001 - any unpickling failure means unusable
                raise CheckpointError(f"checkpoint {path}: cannot load {rel} with "
                                      f"weights_only=True: {type(e).__name__}: {e}") from e
        return Checkpoint(int(manifest["episode"]), path, parts)

    def load_latest(self) -> Checkpoint | None:
        """The newest checkpoint that loads; bad ones are reported and skipped."""
        for _, path in reversed(self.checkpoints()):
            try:
                return self.load(path)
            except CheckpointError as e:
                self.skipped.append((path, str(e)))
                warnings.warn(f"{e}; trying the previous checkpoint", CheckpointWarning,
                              stacklevel=2)
                if self.console is not None:
                    self.console.print(f"[yellow]skipping bad checkpoint[/yellow]: {e}",
                                       highlight=False, soft_wrap=True)
        return None
