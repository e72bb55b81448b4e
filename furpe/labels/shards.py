"""WebDataset shards: plain tar files of samples, written atomically.

A sample is a group of tar members that share a key (``KEY.json``, ``KEY.jpg``), the
WebDataset convention, so the shards read with the ``webdataset`` package and with a plain
:mod:`tarfile` loop (:func:`iter_samples`). A shard is written to a hidden temporary file and
renamed when complete; a shard under its final name is therefore either complete or damaged
from outside, and :func:`check_shard` tells which, naming the file.
"""
from __future__ import annotations

import io
import json
import os
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from furpe.core.errors import DatasetError
from furpe.core.files import dumps

#: ``labels-<part>of<parts>-<sequence>.tar``: the shards of one part of a split run.
SHARD_RE = re.compile(r"^labels-(\d{3,})of(\d{3,})-(\d{6,})\.tar$")


class ShardError(DatasetError):
    """A shard that cannot be read (truncated or not a tar file): exit status 2."""


def shard_name(part: int, parts: int, sequence: int) -> str:
    return f"labels-{part:03d}of{parts:03d}-{sequence:06d}.tar"


def list_shards(folder: str | os.PathLike[str]) -> list[Path]:
    """The complete shards of a folder (temporary files excluded), sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if SHARD_RE.match(p.name) and p.is_file())


def check_shard(path: Path) -> list[tarfile.TarInfo]:
    """The members of a shard, after checking it is a whole tar file: every member's data
    inside the file, then the end-of-archive blocks. Raises :class:`ShardError` naming it."""
    size = path.stat().st_size
    try:
        with tarfile.open(path, mode="r:") as tar:
            members = tar.getmembers()
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ShardError(f"{path}: damaged shard ({exc}); delete it and run the same "
                         "command again to redo its samples") from None
    end = 0
    for m in members:
        end = m.offset_data + ((m.size + 511) // 512) * 512
    if size % 512 or end + 1024 > size:
        raise ShardError(f"{path}: truncated shard ({size} bytes, its members need "
                         f"{end + 1024}); delete it and run the same command again to redo "
                         "its samples")
    with open(path, "rb") as f:
        f.seek(end)
        if any(f.read(1024)):
            raise ShardError(f"{path}: truncated shard (no end-of-archive marker)")
    return members


def sample_key(member: str) -> tuple[str, str]:
    """(key, extension) of a member name: the basename up to its first dot, WebDataset's
    rule."""
    base = member.rsplit("/", 1)[-1]
    key, _, ext = base.partition(".")
    prefix = member[: len(member) - len(base)]
    return prefix + key, ext


def shard_keys(path: Path) -> list[str]:
    """The sample keys of a (checked) shard, in order."""
    keys: list[str] = []
    for m in check_shard(path):
        key, _ = sample_key(m.name)
        if not keys or keys[-1] != key:
            keys.append(key)
    return keys


def iter_samples(path: Path, only: tuple[str, ...] | None = None) -> Iterator[dict[str, Any]]:
    """The samples of a shard as dicts ``{"__key__": key, ext: bytes, ...}``, with ``json``
    decoded, like ``webdataset.WebDataset(url)`` followed by decoding the JSON. ``only``:
    read just these extensions (e.g. ``("json",)``: the other members are skipped unread)."""
    check_shard(path)
    current: dict[str, Any] | None = None
    with tarfile.open(path, mode="r:") as tar:
        for m in tar:
            if not m.isfile():
                continue
            key, ext = sample_key(m.name)
            if only is not None and ext not in only:
                continue
            data = tar.extractfile(m).read()  # type: ignore[union-attr]
            if current is not None and current["__key__"] != key:
                yield current
                current = None
            if current is None:
                current = {"__key__": key}
            current[ext] = json.loads(data) if ext == "json" else data
    if current is not None:
        yield current


@dataclass
class ShardWriter:
    """Writes samples into shards of ``size`` samples: ``labels-<part>of<parts>-<seq>.tar``
    in ``folder``, each through a hidden temporary file renamed when the shard is full (or
    at :meth:`close`). ``written`` lists the index entries of the shards completed:
    ``{"name", "samples", "people", "bytes"}``."""

    folder: Path
    part: int = 0
    parts: int = 1
    size: int = 1000
    written: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.folder = Path(self.folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._tar: tarfile.TarFile | None = None
        self._count = 0
        self._people = 0
        self._tmp: Path | None = None
        own = [int(m.group(3)) for p in list_shards(self.folder)
               if (m := SHARD_RE.match(p.name)) and (int(m.group(1)), int(m.group(2)))
               == (self.part, self.parts)]
        self._sequence = max(own, default=-1) + 1
        for stale in self.folder.glob(f".{shard_name(self.part, self.parts, 0)[:-10]}*.tmp"):
            stale.unlink()  # a shard an earlier, killed run of this part never finished

    def write(self, key: str, files: dict[str, bytes | dict], people: int = 0) -> None:
        """Add one sample: ``files`` maps extensions (``json``, ``jpg``) to bytes (a dict
        is written as JSON); ``people`` is counted in the shard's index entry."""
        if "." in key or "/" in key:
            raise ValueError(f"sample keys may hold no '.' or '/': {key!r}")
        if self._tar is None:
            self._tmp = self.folder / f".{shard_name(self.part, self.parts, self._sequence)}.tmp"
            self._tar = tarfile.open(self._tmp, mode="w", format=tarfile.USTAR_FORMAT)
        for ext, data in files.items():
            if isinstance(data, dict):
                data = dumps(data).encode()
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size = len(data)
            info.mtime = 0  # identical inputs give identical shards
            info.mode = 0o644
            self._tar.addfile(info, io.BytesIO(data))
        self._count += 1
        self._people += people
        if self._count >= self.size:
            self.flush()

    def flush(self) -> None:
        """Finish the current shard (if it holds any sample) under its final name."""
        if self._tar is None:
            return
        self._tar.close()
        with open(self._tmp, "rb+") as f:  # type: ignore[arg-type]
            os.fsync(f.fileno())
        name = shard_name(self.part, self.parts, self._sequence)
        os.replace(self._tmp, self.folder / name)  # type: ignore[arg-type]
        self.written.append({"name": name, "samples": self._count, "people": self._people,
                             "bytes": (self.folder / name).stat().st_size})
        self._tar, self._tmp, self._count, self._people = None, None, 0, 0
        self._sequence += 1

    def abort(self) -> None:
        """Drop the unfinished shard (its samples are redone by the next run)."""
        if self._tar is not None:
            self._tar.close()
            Path(self._tmp).unlink(missing_ok=True)  # type: ignore[arg-type]
            self._tar, self._tmp, self._count, self._people = None, None, 0, 0

    close = flush
