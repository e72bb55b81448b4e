"""The shipped model files: listed, checked by sha256, refused when damaged or missing."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from furpe.core.errors import SetupError
from furpe.experts.models import MODEL_FILES, model_path, models_dir

REPO = Path(__file__).resolve().parents[1]


def test_every_shipped_file_is_listed_and_verifies() -> None:
    shipped = sorted(p.name for p in models_dir().iterdir() if not p.name.startswith("."))
    assert shipped == sorted(MODEL_FILES)
    listing = (REPO / "MODELS.md").read_text()
    for name, entry in MODEL_FILES.items():
        assert model_path(name).is_file()
        assert f"`{name}`" in listing and entry.sha256 in listing


def test_damaged_missing_and_unknown_files_are_refused(tmp_path: Path) -> None:
    name = "face_landmarker.task"
    data = bytearray(model_path(name).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / name).write_bytes(bytes(data))
    with pytest.raises(SetupError, match=r"damaged or not the expected one.*reinstall"):
        model_path(name, tmp_path)
    (tmp_path / name).unlink()
    with pytest.raises(SetupError, match=f"model file {tmp_path / name} is missing"):
        model_path(name, tmp_path)
    shutil.copy(model_path(name), tmp_path / name)
    assert model_path(name, tmp_path) == tmp_path / name
    with pytest.raises(SetupError, match="unknown model file 'nope.task'"):
        model_path("nope.task")
