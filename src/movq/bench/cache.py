"""Per-shard resume cache: the running statistics of one rank, saved atomically at chunk boundaries."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

from movq.atomic import atomic_write, atomic_write_text


def fingerprint_files(entries: list[tuple[str, int, int]]) -> str:
    """Stable hash of ``(relative path, size, mtime_ns)`` triples."""
    digest = hashlib.sha256()
    for rel, size, mtime in entries:
        digest.update(f"{rel}\0{size}\0{mtime}\n".encode())
    return digest.hexdigest()


def describe_model_source(spec: str) -> Any:
    """What identifies a model spec for caching: a folder's files (name, size, mtime) or the name itself."""
    path = Path(spec)
    if path.exists():
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        return [str(path.resolve())] + [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files]
    return spec


def run_id(key: dict[str, Any]) -> str:
    """16 hex digits identifying a run configuration (the JSON of ``key``), the same on every rank."""
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


class ShardCache:
    """Cache file ``DIR/<run key>/shard<rank>-of-<world>.pt`` for one rank of one run configuration.

    ``key`` is a JSON-able description of everything that determines the numbers (data files,
    models, protocol, sharding); a different configuration gets a different folder, so a stale
    cache is never mixed in. The payload is ``{"done": [chunk ids], "stats": ..., "skipped": [...]}``.
    """

    def __init__(self, root: str | os.PathLike, key: dict[str, Any], rank: int, world_size: int) -> None:
        text = json.dumps(key, sort_keys=True, default=str)
        self.run_id = run_id(key)
        self.folder = Path(root) / self.run_id
        self.path = self.folder / f"shard{rank}-of-{world_size}.pt"
        self._key_text = text

    def load(self) -> dict[str, Any] | None:
        if not self.path.is_file():
            return None
        try:
            return torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception:  # a torn or foreign file: start this shard again
            return None

    def save(self, payload: dict[str, Any]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        key_file = self.folder / "run.json"
        if not key_file.exists():
            atomic_write_text(key_file, self._key_text + "\n")
        atomic_write(self.path, lambda tmp: torch.save(payload, tmp))
