"""Files that are never half-written: atomic writes and strict, readable JSON."""
from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator

def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


@contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path``; on success it replaces ``path``.

    On any exception (including KeyboardInterrupt) the temporary file is deleted and
    ``path`` is left as it was. Parent folders are created. The file gets the permissions of
    an ordinary new file (``0o666`` less the umask), not ``mkstemp``'s private ``0o600``.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    tmp_path = Path(tmp)
    try:
        os.chmod(tmp_path, 0o666 & ~_UMASK)
        with os.fdopen(fd, mode, **({"encoding": "utf-8"} if "b" not in mode else {})) as fh:
            yield fh
            fh.flush()
        os.replace(tmp_path, final)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def _is_scalar(x: Any) -> bool:
    return x is None or isinstance(x, (int, float, str))


def _is_inline(obj: Any) -> bool:
    """A list of scalars, or a list of lists of scalars: written on one line."""
    return isinstance(obj, list) and all(
        _is_scalar(x) or (isinstance(x, list) and all(_is_scalar(y) for y in x)) for x in obj)


def dumps(obj: Any, indent: int = 1, _level: int = 0) -> str:
    """Indented JSON in which vectors and matrices of scalars stay on one line (strict JSON)."""
    if _is_inline(obj):
        return json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(", ", ": "))
    pad, inner = " " * (indent * _level), " " * (indent * (_level + 1))
    if isinstance(obj, dict) and obj:
        body = ",\n".join(f"{inner}{json.dumps(str(k), ensure_ascii=False)}: "
                          f"{dumps(v, indent, _level + 1)}" for k, v in obj.items())
        return "{\n" + body + "\n" + pad + "}"
    if isinstance(obj, (list, tuple)) and obj:
        body = ",\n".join(inner + dumps(v, indent, _level + 1) for v in obj)
        return "[\n" + body + "\n" + pad + "]"
    return json.dumps(obj, ensure_ascii=False, allow_nan=False)


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as indented UTF-8 JSON (strict: NaN/inf are refused), atomically.

    Numeric vectors and matrices are kept on one line each to stay readable.
    """
    text = dumps(obj)
    with atomic_write(path, "w") as fh:
        fh.write(text + "\n")
    return Path(path)


def read_json(path: str | os.PathLike[str]) -> Any | None:
    """Parsed JSON, or None if the file is missing or not valid JSON."""
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def jsonable(x: Any) -> Any:
    """Nested dicts, lists and tuples as JSON's objects (string keys) and lists."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    return x
