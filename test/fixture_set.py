"""Loaders for a golden fixture set recorded from the official model code.

The set is $ALPAMAYO_FIXTURE_DIR, else <repo>/../shared/fixtures/alpamayo_tiny_a (set A).
Tests hold for any set recorded the same way (other dims, seed, motion, layout): every
expectation and dimension comes from the set's own files (its README describes them), and
a test whose inputs the set lacks is skipped with a reason naming the missing file or key:

    fixture_dir()            Path or None when no set is there
    require_fixture_dir()    Path, or pytest.skip with the reason
    requires_fixtures        pytest mark: skip the test/module when the set is absent
    load_expected()          expected.json
    load_inputs()            inputs.safetensors (torch tensors)
    load_expected_tensors()  expected.safetensors (torch tensors)
    pixel_values()           expected pixel values, float32 numpy (levels[codes])
    checkpoint_config()      checkpoint/config.json
    base_vlm_dir()           the base-VLM / processor directory the config names
    extended_tokenizer()     (tokenizer, TokenIds) of the set, loaded once per session

The mappings returned skip the calling test when a key is missing (``m["tf_step_x"]`` on a
set without it), instead of failing with a KeyError; ``in`` and ``get`` behave as usual.
test_fixture_set_variants.py runs the fixture tests against modified copies of set A.
All loaders cache their result: treat what they return as read-only.
"""
from __future__ import annotations

import functools
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_FIXTURE_DIR = REPO_ROOT.parent / "shared" / "fixtures" / "alpamayo_tiny_a"
# What makes a directory a fixture set at all; every other file is checked where it is used.
_MARKER_FILE = "checkpoint/config.json"


def configured_dir() -> Path:
    """$ALPAMAYO_FIXTURE_DIR if set, else the default location of set A."""
    return Path(os.environ.get("ALPAMAYO_FIXTURE_DIR") or DEFAULT_FIXTURE_DIR)


def fixture_dir() -> Optional[Path]:
    """The fixture set directory, or None when it (or its checkpoint config) is missing."""
    path = configured_dir()
    return path if (path / _MARKER_FILE).is_file() else None


def _skip_reason() -> str:
    return (f"golden fixture set not found: {configured_dir()} has no {_MARKER_FILE} "
            f"(set $ALPAMAYO_FIXTURE_DIR, default {DEFAULT_FIXTURE_DIR})")


requires_fixtures = pytest.mark.skipif(fixture_dir() is None, reason=_skip_reason())


def require_fixture_dir() -> Path:
    """The fixture set directory; skips the calling test when it is absent."""
    path = fixture_dir()
    if path is None:
        pytest.skip(_skip_reason())
    return path


def require_file(relative: str) -> Path:
    """``<set>/<relative>``; skips the calling test when the set lacks that file."""
    root = require_fixture_dir()
    if not (root / relative).exists():
        pytest.skip(f"fixture set {root} lacks {relative}")
    return root / relative


class SetMapping(Mapping):
    """Read-only view of one of the set's files; a missing key skips the calling test."""

    def __init__(self, data: Mapping, where: str) -> None:
        self._data, self._where = data, where

    def __getitem__(self, key: str) -> Any:
        if key not in self._data:
            pytest.skip(f"fixture set lacks {self._where}[{key!r}]")
        value = self._data[key]
        return SetMapping(value, f"{self._where}[{key!r}]") if isinstance(value, Mapping) \
            else value

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def get(self, key: str, default: Any = None) -> Any:
        return self[key] if key in self._data else default

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


@functools.lru_cache(maxsize=None)
def load_expected() -> SetMapping:
    path = require_file("expected.json")
    return SetMapping(json.loads(path.read_text()), "expected.json")


@functools.lru_cache(maxsize=None)
def load_inputs() -> SetMapping:
    from safetensors.torch import load_file
    return SetMapping(load_file(str(require_file("inputs.safetensors"))), "inputs.safetensors")


@functools.lru_cache(maxsize=None)
def load_expected_tensors() -> SetMapping:
    from safetensors.torch import load_file
    return SetMapping(load_file(str(require_file("expected.safetensors"))),
                      "expected.safetensors")


@functools.lru_cache(maxsize=None)
def pixel_values() -> np.ndarray:
    """The expected pixel values (float32), rebuilt losslessly as levels[codes]."""
    with np.load(require_file("expected_pixel_values.npz")) as data:
        values = data["pixel_values_levels"][data["pixel_values_codes"]]
        shape = tuple(int(v) for v in data["pixel_values_shape"])
    return values.reshape(shape)


@functools.lru_cache(maxsize=None)
def checkpoint_config() -> SetMapping:
    path = require_file(_MARKER_FILE)
    return SetMapping(json.loads(path.read_text()), _MARKER_FILE)


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
