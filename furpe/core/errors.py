"""Errors that the command line reports as one clear message (no traceback)."""
from __future__ import annotations


class FurpeError(Exception):
    """A user-facing error: bad input, missing file, unknown option, no person found."""


class InputError(FurpeError):
    """An input file is missing, unreadable or not decodable."""


class NoPersonError(FurpeError):
    """The experts found no person in an image."""


class SetupError(FurpeError):
    """A configuration problem: bad option, model files missing, reconstructor not built."""


class DatasetError(InputError):
    """A dataset folder is incomplete or a file in it cannot be read."""
