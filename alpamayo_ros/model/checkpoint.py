"""Reads an Alpamayo checkpoint directory (R1 or 1.5) in the official on-disk format.

The official releases (``nvidia/Alpamayo-R1-10B``, ``nvidia/Alpamayo-1.5-10B``) are a
``config.json`` with ``model_type`` ``alpamayo_r1`` or ``alpamayo1_5`` (the family, see
core.model_family) plus safetensors weights, either one ``model.safetensors`` or a
``model.safetensors.index.json`` naming the shards. This module only finds, checks and reads
those files (no torch modules are built here; see ``modeling.py``). Nothing is fetched from
the hub: every path must exist locally, and pickle formats (.bin/.pt) are refused.
Every problem is a CheckpointError (a ConfigError: one line, exit status 2 in the node and
the replay) that names the file: unreadable files, JSON that is not JSON, and weights that
are truncated or not safetensors at all, found from their header before anything heavy is
loaded (check_safetensors_file: the header gives the size the file must have).

Model identity (``compute_model_id``): SHA-256 of config.json, the weight index and the
SHA-256 of every weight file's bytes, so two checkpoints with equal configs but different
weights (fine-tunes, seeds) get different ids. Hashing a 22 GB checkpoint takes tens of
seconds, so each file's digest is cached in a user cache file keyed by (absolute path,
size, mtime): ``$XDG_CACHE_HOME/alpamayo_ros/weight_digests.json`` (default
``~/.cache``), never in the checkpoint directory, which may be read-only. A missing,
unreadable or corrupt cache file only costs a re-hash; an unwritable one is reported in
the log and skipped. The time a hash took is logged (logger ``alpamayo_ros.model.checkpoint``).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from alpamayo_ros.core.errors import CheckpointError, ConfigError
from alpamayo_ros.core.model_family import FAMILIES, ModelFamily, family_for_model_type

CONFIG_NAME = "config.json"
SINGLE_WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
# Files a processor / base-VLM directory must hold for our loader (the tokenizer, the
# chat template, the image-processor constants and the base Qwen3-VL geometry).
REQUIRED_PROCESSOR_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json",
                            "preprocessor_config.json")
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
DIGEST_CACHE_NAME = "weight_digests.json"
_DIGEST_CACHE_VERSION = 1

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CheckpointFiles:
    """The located files of one checkpoint.

    checkpoint_dir: directory holding config.json and the weights.
    config: the parsed config.json (official field names).
    weight_files: safetensors files to read, in index order (one or more shards).
    index_path: model.safetensors.index.json when the weights are sharded, else None.
    weight_map: tensor name -> shard file name (from the index; None for a single file).
    """

    checkpoint_dir: Path
    config: dict
    weight_files: tuple[Path, ...]
    index_path: Optional[Path]
    weight_map: Optional[dict]

    @property
    def family(self) -> ModelFamily:
        """R1 or 1.5, from config.json's model_type."""
        return checkpoint_family(self.config)


def _read_json(path: Path) -> dict:
    """Parse one JSON object file of a checkpoint or processor directory (CheckpointError
    if it cannot be read, is not UTF-8 JSON or not an object)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise CheckpointError(f"{path} is not valid JSON: not UTF-8 text ({exc.reason} at "
                              f"byte {exc.start})") from exc
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise CheckpointError(f"{path} must hold a JSON object, have {type(value).__name__}")
    return value


def _is_alpamayo_config(path: Path) -> bool:
    try:
        return _read_json(path).get("model_type") in FAMILIES
    except CheckpointError:
        return False


def read_checkpoint_config(checkpoint_dir: Path | str) -> dict:
    """Parse ``<checkpoint_dir>/config.json`` and check that it is an Alpamayo R1 or 1.5
    config (its family: checkpoint_family)."""
    checkpoint_dir = Path(checkpoint_dir)
    if not checkpoint_dir.is_dir():
        raise CheckpointError(f"checkpoint directory {str(checkpoint_dir)!r} does not exist")
    config_path = checkpoint_dir / CONFIG_NAME
    if not config_path.is_file():
        nested = sorted(p.parent for p in checkpoint_dir.glob(f"*/{CONFIG_NAME}")
                        if _is_alpamayo_config(p))
        hint = (f"; did you mean its subdirectory {str(nested[0])!r}? (a tiny checkpoint "
                "root holds checkpoint/ and base_vlm/)") if nested else ""
        raise CheckpointError(f"checkpoint directory {str(checkpoint_dir)!r} has no "
                              f"{CONFIG_NAME}{hint}")
    config = _read_json(config_path)
    checkpoint_family(config, str(config_path))
    for key in ("vocab_size", "traj_vocab_size", "traj_token_start_idx", "expert_cfg",
                "action_in_proj_cfg", "action_space_cfg", "vlm_name_or_path"):
        if key not in config:
            raise CheckpointError(f"{config_path} lacks the field {key!r}")
    return config


def checkpoint_family(config: dict, where: str = CONFIG_NAME) -> ModelFamily:
    """The family (R1 or 1.5) a parsed config.json names; CheckpointError naming the
    model_type found when it is neither."""
    try:
        return family_for_model_type(config.get("model_type"), where)
    except ConfigError as exc:
        raise CheckpointError(str(exc)) from exc


def find_weight_files(checkpoint_dir: Path | str) -> tuple[tuple[Path, ...], Optional[Path],
                                                          Optional[dict]]:
    """Locate the safetensors weights: (files, index path or None, weight map or None).

    A sharded checkpoint needs its index and every shard the index names; a single-file one
    needs model.safetensors. Pickle weights (.bin/.pt) are refused because loading them can
    run arbitrary code.
    """
    checkpoint_dir = Path(checkpoint_dir)
    index_path = checkpoint_dir / WEIGHTS_INDEX_NAME
    if index_path.is_file():
        index = _read_json(index_path)
        weight_map = index.get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise CheckpointError(f"{index_path} has no 'weight_map'")
        shard_names = sorted(set(weight_map.values()))
        missing = [name for name in shard_names if not (checkpoint_dir / name).is_file()]
        if missing:
            raise CheckpointError(
                f"{checkpoint_dir}: {len(missing)} of {len(shard_names)} shards named in "
                f"{WEIGHTS_INDEX_NAME} are missing: {missing[:5]}")
        bad = [name for name in shard_names if not name.endswith(".safetensors")]
        if bad:
            raise CheckpointError(f"{index_path} names non-safetensors shards {bad[:5]}; "
                                  "only safetensors are loaded")
        return tuple(checkpoint_dir / name for name in shard_names), index_path, weight_map
    single = checkpoint_dir / SINGLE_WEIGHTS_NAME
    if single.is_file():
        return (single,), None, None
    pickles = sorted(p.name for p in checkpoint_dir.iterdir()
                     if p.suffix in _PICKLE_SUFFIXES)
    if pickles:
        raise CheckpointError(
            f"{checkpoint_dir} holds only pickle weights {pickles[:5]}; convert them to "
            f"safetensors ({SINGLE_WEIGHTS_NAME} or {WEIGHTS_INDEX_NAME} + shards)")
    raise CheckpointError(
        f"{checkpoint_dir} has neither {SINGLE_WEIGHTS_NAME} nor {WEIGHTS_INDEX_NAME}")


def locate_checkpoint(checkpoint_dir: Path | str) -> CheckpointFiles:
    """Check a checkpoint directory and return its config and weight files.

    Every weight file is checked to be a complete safetensors file (check_safetensors_file)
    before anything heavy is loaded.
    """
    checkpoint_dir = Path(checkpoint_dir).expanduser().resolve()
    config = read_checkpoint_config(checkpoint_dir)
    files, index_path, weight_map = find_weight_files(checkpoint_dir)
    for path in files:
        check_safetensors_file(path)
    return CheckpointFiles(checkpoint_dir, config, files, index_path, weight_map)


# The safetensors format: an 8-byte little-endian header length n, n bytes of JSON header
# ({tensor name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}),
# then the data; offsets are relative to the end of the header. The safetensors library
# refuses headers above 100 MB.
_SAFETENSORS_MAX_HEADER = 100_000_000


def check_safetensors_file(path: Path | str) -> None:
    """CheckpointError unless `path` is a readable, complete safetensors file.

    Reads only the header (a few kilobytes to a few megabytes): the length field, the JSON
    header and the largest tensor end offset give the size the file must have, so a
    truncated download says how many bytes it has and needs.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            length_field = handle.read(8)
            if len(length_field) < 8:
                raise CheckpointError(f"{path} is not a safetensors file: have {size} bytes, "
                                      "need at least 8 (the header length)")
            header_size = int.from_bytes(length_field, "little")
            if header_size > _SAFETENSORS_MAX_HEADER:
                raise CheckpointError(
                    f"{path} is not a safetensors file: its header length field says "
                    f"{header_size} bytes, need at most {_SAFETENSORS_MAX_HEADER}")
            if 8 + header_size > size:
                raise CheckpointError(
                    f"{path} is truncated or not a safetensors file: have {size} bytes, "
                    f"need at least {8 + header_size} for its header")
            header = handle.read(header_size)
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        meta = json.loads(header.decode("utf-8"))
        ends = [int(entry["data_offsets"][1]) for name, entry in meta.items()
                if name != "__metadata__"]
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError, KeyError, IndexError,
            TypeError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a safetensors file: its {header_size}-byte "
                              f"header is not a safetensors JSON header ({exc})") from exc
    need = 8 + header_size + max(ends, default=0)
    if size < need:
        raise CheckpointError(
            f"{path} is truncated: have {size} bytes, need {need} (header {8 + header_size} "
            f"+ tensor data {need - 8 - header_size}); download or copy it again")


def resolve_processor_dir(checkpoint_dir: Path | str, config: dict,
                          processor_dir: Path | str | None = None) -> Path:
    """Find the local directory with the base Qwen3-VL config, tokenizer and processor.

    Order: the explicit ``processor_dir``; else ``config["vlm_name_or_path"]`` when it is an
    existing directory (absolute, or relative to the checkpoint directory's parent, then to
    the checkpoint directory itself). The released config names a hub id
    (``Qwen/Qwen3-VL-8B-Instruct``), which is never downloaded: pass ``processor_dir``.
    """
    checkpoint_dir = Path(checkpoint_dir)
    if processor_dir is not None:
        candidate = Path(processor_dir).expanduser()
        if not candidate.is_dir():
            raise CheckpointError(f"processor_dir {str(candidate)!r} does not exist")
    else:
        name = str(config.get("vlm_name_or_path", ""))
        raw = Path(name).expanduser()
        options = [raw] if raw.is_absolute() else [checkpoint_dir.parent / raw,
                                                   checkpoint_dir / raw]
        found = [p for p in options if name and p.is_dir()]
        if not found:
            raise CheckpointError(
                f"vlm_name_or_path {name!r} in {checkpoint_dir / CONFIG_NAME} is not a local "
                f"directory (looked at {[str(p) for p in options]}); pass processor_dir= "
                "pointing at a local copy of the base Qwen3-VL directory (config.json, "
                "tokenizer files, preprocessor_config.json); see docs/model.md")
        candidate = found[0]
    candidate = candidate.resolve()
    missing = [f for f in REQUIRED_PROCESSOR_FILES if not (candidate / f).is_file()]
    if missing:
        raise CheckpointError(f"processor directory {candidate} lacks {missing}")
    return candidate


def read_processor_config(processor_dir: Path | str) -> dict:
    """The base VLM's Qwen3-VL config.json (text_config, vision_config, token ids)."""
    path = Path(processor_dir) / "config.json"
    config = _read_json(path)
    if "text_config" not in config or "vision_config" not in config:
        raise CheckpointError(f"{path} is not a Qwen3-VL config (needs text_config and "
                              f"vision_config, has {sorted(config)[:8]})")
    return config


def compute_model_id(files: CheckpointFiles, length: int = 12) -> str:
    """Short content hash naming the config and the weights of a checkpoint.

    SHA-256 over config.json, the weight index (sharded checkpoints) and, per weight file
    in index order, its name and the SHA-256 of its bytes (header and tensor data). File
    digests come from the user cache when (path, size, mtime) are unchanged (see the module
    docstring).
    """
    digest = hashlib.sha256()
    try:
        digest.update((files.checkpoint_dir / CONFIG_NAME).read_bytes())
        if files.index_path is not None:
            digest.update(files.index_path.read_bytes())
        digests = weight_file_digests(files.weight_files)
    except OSError as exc:
        raise CheckpointError(f"cannot read {exc.filename}: {exc.strerror or exc}") from exc
    for path, file_digest in zip(files.weight_files, digests):
        digest.update(f"\0{path.name}\0{file_digest}".encode())
    return digest.hexdigest()[:length]


def weight_digest_cache_path() -> Path:
    """``$XDG_CACHE_HOME/alpamayo_ros/weight_digests.json`` (XDG default ``~/.cache``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "alpamayo_ros" / DIGEST_CACHE_NAME


def weight_file_digests(paths: tuple[Path, ...] | list[Path]) -> list[str]:
    """SHA-256 hex digest of each file's bytes, from the cache where it is still valid.

    A file is hashed again when its size or mtime differ from the cached entry; new digests
    are written back. The time spent hashing is logged.
    """
    cache_path = weight_digest_cache_path()
    entries = _read_digest_cache(cache_path)
    out, hashed, hashed_bytes = [], [], 0
    start = time.perf_counter()
    for path in paths:
        key = str(Path(path).resolve())
        stat = os.stat(key)
        entry = entries.get(key)
        if (isinstance(entry, dict) and entry.get("size") == stat.st_size
                and entry.get("mtime_ns") == stat.st_mtime_ns
                and isinstance(entry.get("sha256"), str)):
            out.append(entry["sha256"])
            continue
        value = _sha256_file(Path(key))
        entries[key] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": value}
        out.append(value)
        hashed.append(key)
        hashed_bytes += stat.st_size
    if hashed:
        elapsed = time.perf_counter() - start
        log.info("hashed %d weight file(s), %.3f GB, in %.2f s (digests cached in %s)",
                 len(hashed), hashed_bytes / 1e9, elapsed, cache_path)
        _write_digest_cache(cache_path, entries, updated=hashed)
    else:
        log.debug("weight digests of %d file(s) taken from %s", len(out), cache_path)
    return out


def _sha256_file(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _read_digest_cache(cache_path: Path) -> dict:
    """The cached entries {absolute path: {size, mtime_ns, sha256}}; {} when the file is
    absent, unreadable or not in the expected format (then it is rewritten later)."""
    try:
        data = json.loads(cache_path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("ignoring the weight digest cache %s: %s", cache_path, exc)
        return {}
    if (not isinstance(data, dict) or data.get("version") != _DIGEST_CACHE_VERSION
            or not isinstance(data.get("files"), dict)):
        log.warning("ignoring the weight digest cache %s: not a version %d cache file",
                    cache_path, _DIGEST_CACHE_VERSION)
        return {}
    return dict(data["files"])


def _write_digest_cache(cache_path: Path, entries: dict, updated: list[str]) -> None:
    """Merge ``updated`` into the cache file as it is now (another process may have written
    it meanwhile), drop entries of files that no longer exist, and replace the file
    atomically. Failures are logged, never raised: the cache only saves time."""
    try:
        merged = _read_digest_cache(cache_path)
        merged = {k: v for k, v in merged.items() if os.path.exists(k)}
        merged.update({k: entries[k] for k in updated})
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache_path.parent, prefix=".weight_digests.",
                                   suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump({"version": _DIGEST_CACHE_VERSION, "files": merged}, handle,
                          indent=1, sort_keys=True)
            os.replace(tmp, cache_path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError as exc:
        log.warning("cannot write the weight digest cache %s: %s", cache_path, exc)


def load_state_dict(files: CheckpointFiles, device: Any = "cpu", dtype: Any = None) -> dict:
    """Read every tensor of the checkpoint (official names) with safetensors.

    dtype: cast floating tensors to it (None keeps the stored dtype); ints are kept.
    A file safetensors cannot read (damaged after locate_checkpoint's size check, or
    unreadable) raises CheckpointError naming it.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    state: dict = {}
    for path in files.weight_files:
        try:
            part = load_file(str(path), device=str(device))
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"cannot read the weights {path}: "
                                  f"{' '.join(str(exc).split())}") from exc
        if dtype is not None:
            part = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in part.items()}
        overlap = state.keys() & part.keys()
        if overlap:
            raise CheckpointError(f"tensor names repeated across shards: {sorted(overlap)[:5]}")
        state.update(part)
    return state
