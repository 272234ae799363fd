"""Loaders for a golden fixture set recorded from the official model code.

Two families of sets: R1 (``SET_R1``, the module-level functions below) is
$ALPAMAYO_FIXTURE_DIR, else <repo>/../shared/fixtures/alpamayo_tiny_a (set A); Alpamayo 1.5
(``SET_1_5``, the same loaders as its methods) is $ALPAMAYO15_FIXTURE_DIR, else
<repo>/../shared/fixtures/alpamayo1_5_tiny_c (set C). ``<repo>/../shared`` is
$ALPAMAYO_SHARED_DIR when that is set.
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
# What makes a directory a fixture set at all; every other file is checked where it is used.
_MARKER_FILE = "checkpoint/config.json"


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


class FixtureSet:
    """One family's fixture set: found through ``env_var``, else ``default_dir``."""

    def __init__(self, env_var: str, default_dir: Path) -> None:
        self.env_var, self.default_dir = env_var, default_dir
        self.requires = pytest.mark.skipif(self.fixture_dir() is None,
                                           reason=self._skip_reason())

    def configured_dir(self) -> Path:
        """$<env_var> if set, else the default location."""
        return Path(os.environ.get(self.env_var) or self.default_dir)

    def fixture_dir(self) -> Optional[Path]:
        """The fixture set directory, or None when it (or its checkpoint config) is missing."""
        path = self.configured_dir()
        return path if (path / _MARKER_FILE).is_file() else None

    def _skip_reason(self) -> str:
        return (f"golden fixture set not found: {self.configured_dir()} has no {_MARKER_FILE} "
                f"(set ${self.env_var}, default {self.default_dir})")

    def require_fixture_dir(self) -> Path:
        """The fixture set directory; skips the calling test when it is absent."""
        path = self.fixture_dir()
        if path is None:
            pytest.skip(self._skip_reason())
        return path

    def require_file(self, relative: str) -> Path:
        """``<set>/<relative>``; skips the calling test when the set lacks that file."""
        root = self.require_fixture_dir()
        if not (root / relative).exists():
            pytest.skip(f"fixture set {root} lacks {relative}")
        return root / relative

    @functools.cache
    def load_expected(self) -> SetMapping:
        path = self.require_file("expected.json")
        return SetMapping(json.loads(path.read_text()), "expected.json")

    @functools.cache
    def load_inputs(self) -> SetMapping:
        from safetensors.torch import load_file
        return SetMapping(load_file(str(self.require_file("inputs.safetensors"))),
                          "inputs.safetensors")

    @functools.cache
    def load_expected_tensors(self) -> SetMapping:
        from safetensors.torch import load_file
        return SetMapping(load_file(str(self.require_file("expected.safetensors"))),
                          "expected.safetensors")

    @functools.cache
    def pixel_values(self) -> np.ndarray:
        """The expected pixel values (float32), rebuilt losslessly as levels[codes]."""
        with np.load(self.require_file("expected_pixel_values.npz")) as data:
            values = data["pixel_values_levels"][data["pixel_values_codes"]]
            shape = tuple(int(v) for v in data["pixel_values_shape"])
        return values.reshape(shape)

    @functools.cache
    def checkpoint_config(self) -> SetMapping:
        path = self.require_file(_MARKER_FILE)
        return SetMapping(json.loads(path.read_text()), _MARKER_FILE)

    def base_vlm_dir(self) -> Path:
        """The base-VLM directory: config.json's vlm_name_or_path, relative to the set root."""
        root = self.require_fixture_dir()
        path = root / self.checkpoint_config()["vlm_name_or_path"]
        if not path.is_dir():
            pytest.skip(f"base VLM directory {path} is missing")
        return path

    @functools.cache
    def extended_tokenizer(self):
        """(tokenizer, TokenIds) of the set, checked against its checkpoint config."""
        from alpamayo_ros.model.prompt import (load_extended_tokenizer,
                                               tokenizer_expectations_from_config)
        return load_extended_tokenizer(
            self.base_vlm_dir(), **tokenizer_expectations_from_config(self.checkpoint_config()))

    def history_inputs(self):
        """(hist_xyz (1, 16, 3), hist_rot (1, 16, 3, 3)) float32 of the set, batch-first."""
        inputs = self.load_inputs()
        return inputs["ego_history_xyz"][:, 0], inputs["ego_history_rot"][:, 0]


# The shared data: $ALPAMAYO_SHARED_DIR (.ci/run sets it), else <repo>/../shared.
SHARED_DIR = Path(os.environ.get("ALPAMAYO_SHARED_DIR") or REPO_ROOT.parent / "shared")
SET_R1 = FixtureSet("ALPAMAYO_FIXTURE_DIR", SHARED_DIR / "fixtures" / "alpamayo_tiny_a")
SET_1_5 = FixtureSet("ALPAMAYO15_FIXTURE_DIR", SHARED_DIR / "fixtures" / "alpamayo1_5_tiny_c")

# The R1 set's loaders under the names the R1 tests import.
DEFAULT_FIXTURE_DIR = SET_R1.default_dir
configured_dir = SET_R1.configured_dir
fixture_dir = SET_R1.fixture_dir
require_fixture_dir = SET_R1.require_fixture_dir
require_file = SET_R1.require_file
requires_fixtures = SET_R1.requires
load_expected = SET_R1.load_expected
load_inputs = SET_R1.load_inputs
load_expected_tensors = SET_R1.load_expected_tensors
pixel_values = SET_R1.pixel_values
checkpoint_config = SET_R1.checkpoint_config
base_vlm_dir = SET_R1.base_vlm_dir
extended_tokenizer = SET_R1.extended_tokenizer
history_inputs = SET_R1.history_inputs
