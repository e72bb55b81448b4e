"""What long runs print: progress bars on a terminal and one line per problem."""
from __future__ import annotations

import sys
from typing import Any


def progress_bar(progress: bool, **kwargs: Any):
    """A tqdm bar on stderr, shown only when ``progress`` and stderr is a terminal."""
    from tqdm import tqdm

    enabled = progress and getattr(sys.stderr, "isatty", lambda: False)()
    return tqdm(disable=not enabled, file=sys.stderr, dynamic_ncols=True, **kwargs)


def say(line: str) -> None:
    """Print a line on stderr without breaking a progress bar."""
    from tqdm import tqdm

    tqdm.write(line, file=sys.stderr)


def format_error(path: str, message: str) -> str:
    """``furpe: error: <path>: <message>``, without repeating a path the message names."""
    if path and path in message:
        return f"furpe: error: {message}"
    return f"furpe: error: {path}: {message}"


def internal_error(exc: BaseException) -> str:
    """``internal error: <Type>: <first line>`` for an unexpected exception."""
    text = str(exc).strip().splitlines()
    return f"internal error: {type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")
