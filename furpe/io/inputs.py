"""Finding the images and videos to process, and reading images.

Output names
------------
Every :class:`InputItem` carries ``out_name``: where its results go, relative to the output
folder and without extension (``"beach"``, ``"trip/day1/beach"``).

* A file given explicitly, or found directly inside a folder given on the command line, is
  named by its stem: ``OUT/<stem>.json``.
* A file found in a sub-folder with ``recursive=True`` keeps its sub-folder relative to the
  folder given: ``photos/trip/day1/beach.jpg`` (folder ``photos``) -> ``OUT/trip/day1/beach.json``.
* A file named in a list file (``.txt`` or ``.lst``: one path per line, relative to the
  list's folder unless absolute; blank lines and lines starting with ``#`` skipped) keeps its
  path relative to the list's folder: ``lists/train.txt`` naming ``imgs/a/1.jpg`` ->
  ``OUT/imgs/a/1.json`` (an absolute path outside that folder is named by its stem).
* Names that would collide (``a/x.jpg`` and ``b/x.jpg`` given explicitly, ``x.jpg`` next to
  ``x.png``, a video whose frame folder would clash with a sub-folder of images) get a
  suffix ``_2``, ``_3``... in the order the inputs are listed (folders are listed sorted, so
  the naming is stable from one run to the next). Names are compared case-insensitively.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Literal

import numpy as np

from furpe.core.errors import InputError

__all__ = ["IMAGE_EXTENSIONS", "LIST_EXTENSIONS", "VIDEO_EXTENSIONS", "ImagesAhead", "InputItem", "collect_inputs",
           "media_kind", "read_image"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v")
#: Extensions of list files: one image or video path per line.
LIST_EXTENSIONS = (".txt", ".lst")

Kind = Literal["image", "video"]


@dataclass(frozen=True)
class InputItem:
    """One image or video to process.

    Attributes:
        path: the file.
        kind: ``"image"`` or ``"video"``.
        out_name: output name relative to the output folder, ``/``-separated, no extension.
    """

    path: Path
    kind: Kind
    out_name: str = ""

    def __post_init__(self) -> None:
        if not self.out_name:
            object.__setattr__(self, "out_name", self.path.stem)


def media_kind(path: str | os.PathLike[str]) -> Kind | None:
    """``"image"`` or ``"video"`` from the file extension (case-insensitive), else None."""
    ext = Path(path).suffix.lower()
    if ext in IMAGE_EXTENSIONS:
        return "image"
    if ext in VIDEO_EXTENSIONS:
        return "video"
    return None


def _supported() -> str:
    return " ".join(IMAGE_EXTENSIONS + VIDEO_EXTENSIONS) + "; list files " + " ".join(
        LIST_EXTENSIONS)


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _scan_folder(folder: Path, recursive: bool, exclude: list[Path]) -> list[tuple[Path, str]]:
    """Media files of ``folder`` as (path, relative out name), sorted; hidden entries skipped."""
    found: list[tuple[Path, str]] = []

    def walk(current: Path, rel: PurePosixPath) -> None:
        try:
            entries = sorted(os.scandir(current), key=lambda e: e.name)
        except OSError as exc:
            raise InputError(f"{current}: cannot list folder ({exc.strerror or exc})") from None
        subdirs = []
        for entry in entries:
            if _is_hidden(entry.name):
                continue
            path = Path(entry.path)
            try:
                is_dir = entry.is_dir()
                is_file = entry.is_file()
            except OSError:
                continue
            if is_dir:
                if recursive and not any(_same_path(path, ex) for ex in exclude):
                    subdirs.append((path, rel / entry.name))
            elif is_file and media_kind(path) is not None:
                found.append((path, str(rel / path.stem)))
        for path, sub in subdirs:
            walk(path, sub)

    walk(folder, PurePosixPath())
    return found


def _same_path(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def _has_subfolder_media(folder: Path) -> bool:
    try:
        return bool(_scan_folder(folder, recursive=True, exclude=[]))
    except InputError:
        return False


def _collect_one(raw: str, recursive: bool, exclude: list[Path]) -> list[InputItem]:
    path = Path(raw)
    if not path.exists():
        raise InputError(f"{raw}: no such file or directory")
    if path.is_dir():
        # The output folder may sit inside an input folder; never read our own results back.
        inner_excludes = [ex for ex in exclude if not _same_path(ex, path)]
        found = _scan_folder(path, recursive, inner_excludes)
        if not found:
            hint = ""
            if not recursive and _has_subfolder_media(path):
                hint = " at the top level (its sub-folders have some: use --recursive)"
            raise InputError(f"{raw}: folder contains no images or videos{hint} "
                             f"(supported extensions: {_supported()})")
        items = []
        for file, rel in found:
            kind = media_kind(file)
            assert kind is not None
            items.append(InputItem(path=file, kind=kind, out_name=rel))
        return items
    kind = media_kind(path)
    if kind is None:
        ext = path.suffix or "(none)"
        raise InputError(f"{raw}: not a supported image or video (extension {ext}; "
                         f"supported: {_supported()})")
    if not os.access(path, os.R_OK):
        raise InputError(f"{raw}: permission denied")
    return [InputItem(path=path, kind=kind, out_name=path.stem)]


def _read_list(path: Path) -> list[tuple[str, str]]:
    """The entries of a list file as (path, output name)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read the list file ({exc})") from None
    out = []
    for line in lines:
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        full = Path(entry) if Path(entry).is_absolute() else path.parent / entry
        try:
            rel = full.relative_to(path.parent)
            name = rel.with_suffix("").as_posix()
        except ValueError:
            name = full.stem
        out.append((str(full), name))
    return out


def _uniquify(items: list[InputItem]) -> list[InputItem]:
    """Give colliding output names a ``_2``, ``_3``... suffix (see the module docstring)."""
    image_dirs: set[str] = set()
    for item in items:
        if item.kind == "image":
            parts = PurePosixPath(item.out_name).parts[:-1]
            for k in range(1, len(parts) + 1):
                image_dirs.add("/".join(parts[:k]).lower())
    taken: set[str] = set()
    result = []
    for item in items:
        base = item.out_name
        name, k = base, 1
        while name.lower() in taken or (item.kind == "video" and name.lower() in image_dirs):
            k += 1
            name = f"{base}_{k}"
        taken.add(name.lower())
        result.append(item if name == base else InputItem(item.path, item.kind, name))
    return result


def collect_inputs(paths: list[str], recursive: bool = False, *,
                   errors: list[tuple[str, str]] | None = None,
                   exclude: list[Path] | None = None) -> list[InputItem]:
    """Expand files, folders and list files into the list of images and videos to process.

    Folders list their images and videos sorted by name; with ``recursive`` their
    sub-folders too (hidden files and folders are skipped). The same file given twice is
    processed once. Folders in ``exclude`` (the output folder) are not descended into.

    A missing path, a folder with nothing usable or an explicit file that is not a supported
    image or video raises :class:`InputError` naming the path; with ``errors`` given, the
    problem is appended to it as ``(path, message)`` instead and the other paths are kept.
    """
    excludes = list(exclude or [])
    items: list[InputItem] = []
    seen: set[Path] = set()
    requests: list[tuple[str, str | None]] = []  # (path, out_name from a list file)
    for raw in paths:
        if Path(raw).suffix.lower() in LIST_EXTENSIONS and Path(raw).is_file():
            try:
                requests.extend(_read_list(Path(raw)))
            except InputError as exc:
                if errors is None:
                    raise
                errors.append((str(raw), str(exc)))
        else:
            requests.append((str(raw), None))
    for raw, name in requests:
        try:
            found = _collect_one(raw, recursive, excludes)
            if name is not None:
                if len(found) != 1 or found[0].path != Path(raw):
                    raise InputError(f"{raw}: a list file names image or video files, "
                                     "not folders")
                found = [InputItem(found[0].path, found[0].kind, name)]
        except InputError as exc:
            if errors is None:
                raise
            errors.append((raw, str(exc)))
            continue
        for item in found:
            try:
                key = item.path.resolve()
            except OSError:
                key = item.path.absolute()
            if key not in seen:
                seen.add(key)
                items.append(item)
    return _uniquify(items)


def _to_uint8(img: np.ndarray) -> np.ndarray:
    if img.dtype == np.uint8:
        return img
    if img.dtype == np.uint16:
        return (img.astype(np.uint32) * 255 // 65535).astype(np.uint8)
    if np.issubdtype(img.dtype, np.floating):
        return (np.clip(np.nan_to_num(img.astype(np.float64)), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if img.dtype == np.int8:
        return (img.astype(np.int16) + 128).astype(np.uint8)
    if np.issubdtype(img.dtype, np.integer):
        info = np.iinfo(img.dtype)
        scaled = (img.astype(np.float64) - info.min) / (info.max - info.min)
        return (scaled * 255.0 + 0.5).astype(np.uint8)
    raise InputError(f"unsupported pixel type {img.dtype}")


def _keeps_alpha(data: bytes) -> bool:
    """Formats that may carry transparency are decoded with their alpha channel."""
    return (data[:8] == b"\x89PNG\r\n\x1a\n" or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")
            or data[:4] in (b"II*\x00", b"MM\x00*"))


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file as (H, W, 3) RGB uint8.

    Works with non-ASCII paths (the bytes are decoded in memory). Grayscale is expanded to
    RGB, 16-bit and floating-point images are scaled to 8 bits, transparent pixels are
    composited over white, and JPEG EXIF orientation is applied. A missing, empty or
    undecodable file raises :class:`InputError`.
    """
    import cv2

    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise InputError(f"cannot read image {p}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"cannot read image {p}: it is a folder") from None
    except OSError as exc:
        raise InputError(f"cannot read image {p}: {exc.strerror or exc}") from None
    if not data:
        raise InputError(f"cannot read image {p}: not a decodable image (empty file)")
    buf = np.frombuffer(data, dtype=np.uint8)
    # IMREAD_UNCHANGED keeps alpha but ignores EXIF orientation; ANYDEPTH|ANYCOLOR applies it.
    flags = cv2.IMREAD_UNCHANGED if _keeps_alpha(data) else cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR
    try:
        img = cv2.imdecode(buf, flags)
    except cv2.error:
        img = None
    if img is None or img.size == 0:
        raise InputError(f"cannot read image {p}: not a decodable image")
    img = _to_uint8(img)
    if img.ndim == 2:
        return np.ascontiguousarray(np.repeat(img[:, :, None], 3, axis=2))
    channels = img.shape[2]
    if channels == 1:
        return np.ascontiguousarray(np.repeat(img, 3, axis=2))
    if channels == 2:  # gray + alpha
        gray, alpha = img[:, :, :1].astype(np.float32), img[:, :, 1:2].astype(np.float32) / 255.0
        out = gray * alpha + 255.0 * (1.0 - alpha)
        return np.repeat(np.clip(out + 0.5, 0, 255).astype(np.uint8), 3, axis=2)
    if channels == 4:
        bgr, alpha = img[:, :, :3].astype(np.float32), img[:, :, 3:4].astype(np.float32) / 255.0
        img = np.clip(bgr * alpha + 255.0 * (1.0 - alpha) + 0.5, 0, 255).astype(np.uint8)
    elif channels != 3:
        raise InputError(f"cannot read image {p}: unsupported {channels}-channel image")
    return np.ascontiguousarray(img[:, :, ::-1])


class ImagesAhead:
    """Reads a sequence of inputs' images one ahead, so that the experts can start on the
    next image while the current one is fitted (``Reconstructor.prefetch``)::

        image = images.take(item)                       # read now, or read ahead before
        images.look_ahead(image, upcoming, rec.prefetch)
    """

    def __init__(self) -> None:
        self._ahead: tuple[InputItem, np.ndarray] | None = None
        self._handed = False  # the image last taken was handed to prefetch already

    def take(self, item: InputItem) -> np.ndarray:
        """``item``'s image: read now, or earlier by :meth:`look_ahead`."""
        ahead, self._ahead = self._ahead, None
        self._handed = ahead is not None and ahead[0] is item
        return ahead[1] if self._handed else read_image(item.path)

    def look_ahead(self, image: np.ndarray, upcoming: InputItem | None,
                   prefetch: Callable[[np.ndarray], None] | None,
                   wanted: Callable[[InputItem], bool] = lambda item: True) -> None:
        """When ``upcoming`` (the next input) is an image that is ``wanted``, read it and
        hand ``image`` (the one just taken, unless it already was) and then it to
        ``prefetch``. An upcoming image that cannot be read is left for its own turn."""
        if prefetch is None or upcoming is None or upcoming.kind != "image" \
                or not wanted(upcoming):
            return
        try:
            following = read_image(upcoming.path)
        except InputError:
            return
        if not self._handed:
            prefetch(image)
        prefetch(following)
        self._ahead = (upcoming, following)
