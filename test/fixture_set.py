"""Loaders for the golden fixture set of the official model (set A, alpamayo_tiny_a).

The directory is $ALPAMAYO_FIXTURE_DIR, else <repo>/../shared/fixtures/alpamayo_tiny_a.
Tests take every expectation and dimension from its files (README.md describes them):

    fixture_dir()            Path or None when absent
    require_fixture_dir()    Path, or pytest.skip with the reason
    requires_fixtures        pytest mark: skip the test/module when the set is absent
    load_expected()          expected.json (dict)
    load_inputs()            inputs.safetensors (dict of torch tensors)
    load_expected_tensors()  expected.safetensors (dict of torch tensors)
    pixel_values()           expected pixel values, float32 numpy (levels[codes])
    checkpoint_config()      checkpoint/config.json (dict)
    base_vlm_dir()           the base-VLM / processor directory the config names
    extended_tokenizer()     (tokenizer, TokenIds) of the set, loaded once per session

All loaders cache their result: treat what they return as read-only.
"""
from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Optional

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_FIXTURE_DIR = REPO_ROOT.parent / "shared" / "fixtures" / "alpamayo_tiny_a"
_REQUIRED_FILES = ("expected.json", "expected.safetensors", "inputs.safetensors",
                   "checkpoint/config.json")


def fixture_dir() -> Optional[Path]:
    """The fixture set directory, or None when it (or one of its main files) is missing."""
    path = Path(os.environ.get("ALPAMAYO_FIXTURE_DIR") or DEFAULT_FIXTURE_DIR)
    if all((path / name).is_file() for name in _REQUIRED_FILES):
        return path
    return None


def _skip_reason() -> str:
    return (f"golden fixture set not found: need $ALPAMAYO_FIXTURE_DIR or "
            f"{DEFAULT_FIXTURE_DIR} holding {', '.join(_REQUIRED_FILES)}")


requires_fixtures = pytest.mark.skipif(fixture_dir() is None, reason=_skip_reason())


def require_fixture_dir() -> Path:
    """The fixture set directory; skips the calling test when it is absent."""
    path = fixture_dir()
    if path is None:
        pytest.skip(_skip_reason())
    return path


@functools.lru_cache(maxsize=None)
def load_expected() -> dict:
    return json.loads((require_fixture_dir() / "expected.json").read_text())


@functools.lru_cache(maxsize=None)
def load_inputs() -> dict:
    from safetensors.torch import load_file
    return load_file(str(require_fixture_dir() / "inputs.safetensors"))


@functools.lru_cache(maxsize=None)
def load_expected_tensors() -> dict:
    from safetensors.torch import load_file
    return load_file(str(require_fixture_dir() / "expected.safetensors"))


@functools.lru_cache(maxsize=None)
def pixel_values() -> np.ndarray:
    """The expected pixel values (float32), rebuilt losslessly as levels[codes]."""
    path = require_fixture_dir() / "expected_pixel_values.npz"
    if not path.is_file():
        pytest.skip(f"{path} is missing")
    with np.load(path) as data:
        values = data["pixel_values_levels"][data["pixel_values_codes"]]
        shape = tuple(int(v) for v in data["pixel_values_shape"])
    return values.reshape(shape)


@functools.lru_cache(maxsize=None)
def checkpoint_config() -> dict:
    return json.loads((require_fixture_dir() / "checkpoint" / "config.json").read_text())


def base_vlm_dir() -> Path:
    """The base-VLM directory: config.json's vlm_name_or_path, relative to the set root."""
    root = require_fixture_dir()
    path = root / checkpoint_config()["vlm_name_or_path"]
    if not path.is_dir():
        pytest.skip(f"base VLM directory {path} is missing")
    return path


@functools.lru_cache(maxsize=None)
def extended_tokenizer():
    """(tokenizer, TokenIds) of the set, checked against its checkpoint config."""
    from alpamayo_ros.model.prompt import (load_extended_tokenizer,
                                           tokenizer_expectations_from_config)
    return load_extended_tokenizer(base_vlm_dir(),
                                   **tokenizer_expectations_from_config(checkpoint_config()))


def history_inputs():
    """(hist_xyz (1, 16, 3), hist_rot (1, 16, 3, 3)) float32 of the set, batch-first."""
    inputs = load_inputs()
    return inputs["ego_history_xyz"][:, 0], inputs["ego_history_rot"][:, 0]
