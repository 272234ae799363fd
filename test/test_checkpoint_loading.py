"""Checkpoint directory checks: files, shards, processor directory, names, tokenizer ids,
and the model id (content hash of config and weights, with its digest cache)."""
import json
import logging
import os
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from alpamayo_ros.core.errors import CheckpointError, ConfigError
from alpamayo_ros.model import checkpoint as checkpoint_module
from alpamayo_ros.model.checkpoint import (compute_model_id, locate_checkpoint,
                                           resolve_processor_dir)
from alpamayo_ros.model.runtime import AlpamayoRuntime, choose_vlm_attention


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    from alpamayo_ros.model.tiny_checkpoint import write_tiny_checkpoint

    root = tmp_path_factory.mktemp("tiny_src")
    write_tiny_checkpoint(root, seed=0)
    return root


@pytest.fixture
def root(tiny_root, tmp_path):
    """A private copy of the tiny checkpoint set that a test may damage."""
    copy = tmp_path / "set"
    shutil.copytree(tiny_root, copy)
    return copy


def _edit_config(checkpoint_dir, **changes):
    path = checkpoint_dir / "config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def _shard(checkpoint_dir, parts=2):
    """Rewrite model.safetensors as an index + shards, like the released checkpoint."""
    state = load_file(str(checkpoint_dir / "model.safetensors"))
    names = sorted(state)
    weight_map = {}
    for index in range(parts):
        shard = f"model-{index + 1:05d}-of-{parts:05d}.safetensors"
        chunk = {k: state[k] for k in names[index::parts]}
        save_file(chunk, str(checkpoint_dir / shard), metadata={"format": "pt"})
        weight_map.update({k: shard for k in chunk})
    (checkpoint_dir / "model.safetensors").unlink()
    (checkpoint_dir / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map}))
    return state


def test_single_file_checkpoint_is_located(root):
    files = locate_checkpoint(root / "checkpoint")
    assert [p.name for p in files.weight_files] == ["model.safetensors"]
    assert files.index_path is None and files.config["model_type"] == "alpamayo_r1"


def test_sharded_checkpoint_loads_the_same_weights(root):
    state = _shard(root / "checkpoint")
    files = locate_checkpoint(root / "checkpoint")
    assert len(files.weight_files) == 2 and files.index_path is not None
    runtime = AlpamayoRuntime.from_pretrained(root / "checkpoint")
    loaded = runtime.network.state_dict()
    for name in ("vlm.lm_head.weight", "expert.norm.weight", "action_out_proj.bias"):
        assert torch.equal(loaded[name], state[name])


def test_missing_shard_is_named(root):
    _shard(root / "checkpoint")
    (root / "checkpoint" / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"1 of 2 shards .* missing: \['model-00002-of-00002"):
        locate_checkpoint(root / "checkpoint")


def test_pickle_weights_are_refused(root):
    (root / "checkpoint" / "model.safetensors").unlink()
    (root / "checkpoint" / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(CheckpointError, match=r"only pickle weights \['pytorch_model.bin'\]"):
        locate_checkpoint(root / "checkpoint")


def test_missing_weights_and_config(root):
    (root / "checkpoint" / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="neither model.safetensors nor"):
        locate_checkpoint(root / "checkpoint")
    (root / "checkpoint" / "config.json").unlink()
    with pytest.raises(CheckpointError, match="has no config.json"):
        locate_checkpoint(root / "checkpoint")
    with pytest.raises(CheckpointError, match="does not exist"):
        locate_checkpoint(root / "nowhere")


def test_wrong_model_type(root):
    _edit_config(root / "checkpoint", model_type="qwen3_vl")
    with pytest.raises(CheckpointError,
                       match="model_type is 'qwen3_vl', need one of 'alpamayo_r1' "
                             r"\(Alpamayo R1\), 'alpamayo1_5' \(Alpamayo 1.5\)") as info:
        locate_checkpoint(root / "checkpoint")
    assert "\n" not in str(info.value)
    _edit_config(root / "checkpoint", model_type=None)
    with pytest.raises(CheckpointError, match="model_type is None, need one of"):
        AlpamayoRuntime.from_pretrained(root / "checkpoint")


def test_malformed_json_files_raise_checkpoint_errors(root):
    from alpamayo_ros.model.checkpoint import read_processor_config

    (root / "base_vlm" / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"base_vlm/config.json is not valid JSON"):
        read_processor_config(root / "base_vlm")
    (root / "checkpoint" / "config.json").write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="must hold a JSON object, have list"):
        locate_checkpoint(root / "checkpoint")


def test_processor_dir_resolution(root, tmp_path):
    ckpt = root / "checkpoint"
    config = json.loads((ckpt / "config.json").read_text())
    # relative to the checkpoint's parent (the layout of the fixture and the tiny set)
    assert resolve_processor_dir(ckpt, config) == (root / "base_vlm").resolve()
    # relative to the checkpoint directory itself
    shutil.move(str(root / "base_vlm"), str(ckpt / "base_vlm"))
    assert resolve_processor_dir(ckpt, config) == (ckpt / "base_vlm").resolve()
    # an explicit directory wins
    other = tmp_path / "processor"
    shutil.copytree(ckpt / "base_vlm", other)
    assert resolve_processor_dir(ckpt, config, other) == other.resolve()
    # a hub id is never downloaded: the error tells the user what to pass
    config["vlm_name_or_path"] = "Qwen/Qwen3-VL-8B-Instruct"
    with pytest.raises(CheckpointError, match="pass processor_dir="):
        resolve_processor_dir(ckpt, config)
    (other / "tokenizer.json").unlink()
    with pytest.raises(CheckpointError, match=r"lacks \['tokenizer.json'\]"):
        resolve_processor_dir(ckpt, config, other)


def test_hub_name_with_explicit_processor_dir_loads(root):
    _edit_config(root / "checkpoint", vlm_name_or_path="Qwen/Qwen3-VL-8B-Instruct")
    with pytest.raises(CheckpointError, match="pass processor_dir="):
        AlpamayoRuntime.from_pretrained(root / "checkpoint")
    runtime = AlpamayoRuntime.from_pretrained(root / "checkpoint", processor_dir=root / "base_vlm")
    assert runtime.processor_dir == (root / "base_vlm").resolve()


def test_tokenizer_mismatch_is_refused(root):
    config = json.loads((root / "checkpoint" / "config.json").read_text())
    _edit_config(root / "checkpoint", vocab_size=config["vocab_size"] + 1)
    with pytest.raises(CheckpointError, match="vocab_size: have"):
        AlpamayoRuntime.from_pretrained(root / "checkpoint")
    _edit_config(root / "checkpoint", vocab_size=config["vocab_size"],
                 traj_token_start_idx=config["traj_token_start_idx"] + 7)
    with pytest.raises(CheckpointError, match="traj_token_start_idx"):
        AlpamayoRuntime.from_pretrained(root / "checkpoint")


def test_missing_and_unexpected_tensor_names_are_listed(root):
    path = root / "checkpoint" / "model.safetensors"
    state = load_file(str(path))
    state.pop("expert.norm.weight")
    state["expert.extra.weight"] = torch.zeros(2)
    save_file(state, str(path), metadata={"format": "pt"})
    with pytest.raises(CheckpointError) as info:
        AlpamayoRuntime.from_pretrained(root / "checkpoint")
    message = str(info.value)
    assert "1 missing" in message and "expert.norm.weight" in message
    assert "1 unexpected" in message and "expert.extra.weight" in message


def test_wrong_tensor_shape_is_reported(root):
    path = root / "checkpoint" / "model.safetensors"
    state = load_file(str(path))
    state["action_out_proj.bias"] = torch.zeros(3)
    save_file(state, str(path), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"action_out_proj.bias: have \(3,\), need \(2,\)"):
        AlpamayoRuntime.from_pretrained(root / "checkpoint")


def test_action_space_buffers_must_match_the_config(root):
    path = root / "checkpoint" / "model.safetensors"
    state = load_file(str(path))
    state["action_space.accel_std"] = torch.tensor(2.0)
    save_file(state, str(path), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="action_space.accel_std buffer is 2.0"):
        AlpamayoRuntime.from_pretrained(root / "checkpoint")


def test_model_id_follows_config_and_weight_index(root):
    ckpt = root / "checkpoint"
    first = compute_model_id(locate_checkpoint(ckpt))
    assert first == compute_model_id(locate_checkpoint(ckpt)) and len(first) == 12
    _edit_config(ckpt, min_pixels=163840 + 1024)
    second = compute_model_id(locate_checkpoint(ckpt))
    assert second != first
    _shard(ckpt)
    assert compute_model_id(locate_checkpoint(ckpt)) not in (first, second)


# ----------------------------------------------------------------- model id names the weights


@pytest.fixture
def digest_cache(tmp_path, monkeypatch):
    """A private XDG cache directory; returns the digest cache file path and a list that
    records every file actually hashed."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    hashed = []
    real = checkpoint_module._sha256_file

    def counting(path):
        hashed.append(path.name)
        return real(path)

    monkeypatch.setattr(checkpoint_module, "_sha256_file", counting)
    return tmp_path / "xdg" / "alpamayo_ros" / "weight_digests.json", hashed


def test_model_id_tells_weights_with_equal_configs_apart(tiny_root, tmp_path, digest_cache):
    from alpamayo_ros.model.tiny_checkpoint import write_tiny_checkpoint

    other = write_tiny_checkpoint(tmp_path / "seed1", seed=1)
    same = write_tiny_checkpoint(tmp_path / "seed0", seed=0)
    ckpt = tiny_root / "checkpoint"
    # Same config and tensor layout: only the weights differ.
    assert (other / "config.json").read_bytes() == (ckpt / "config.json").read_bytes()
    ids = [compute_model_id(locate_checkpoint(p)) for p in (ckpt, other, same)]
    assert ids[0] != ids[1]
    assert ids[0] == ids[2]  # same seed, another directory: same weights, same id


def test_model_id_changes_with_one_tensor_value(root, digest_cache):
    ckpt = root / "checkpoint"
    before = compute_model_id(locate_checkpoint(ckpt))
    state = load_file(str(ckpt / "model.safetensors"))
    state["action_out_proj.bias"] = state["action_out_proj.bias"] + 1e-6
    save_file(state, str(ckpt / "model.safetensors"), metadata={"format": "pt"})
    assert compute_model_id(locate_checkpoint(ckpt)) != before


def test_weight_digests_are_cached_by_path_size_and_mtime(root, digest_cache, caplog):
    cache_file, hashed = digest_cache
    ckpt = root / "checkpoint"
    with caplog.at_level(logging.INFO, logger="alpamayo_ros.model.checkpoint"):
        first = compute_model_id(locate_checkpoint(ckpt))
    assert hashed == ["model.safetensors"]
    assert re.search(r"hashed 1 weight file\(s\), [0-9.]+ GB, in [0-9.]+ s", caplog.text)
    cached = json.loads(cache_file.read_text())["files"]
    assert list(cached) == [str((ckpt / "model.safetensors").resolve())]

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="alpamayo_ros.model.checkpoint"):
        assert compute_model_id(locate_checkpoint(ckpt)) == first
    assert hashed == ["model.safetensors"]  # second load: digest from the cache
    assert "hashed" not in caplog.text

    # A touched file (new mtime, same bytes) is hashed again; the id stays.
    stat = (ckpt / "model.safetensors").stat()
    os.utime(ckpt / "model.safetensors", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert compute_model_id(locate_checkpoint(ckpt)) == first
    assert hashed == ["model.safetensors"] * 2


def test_runtime_loads_reuse_the_cached_digest(root, digest_cache, caplog):
    _, hashed = digest_cache
    with caplog.at_level(logging.INFO, logger="alpamayo_ros.model.checkpoint"):
        a = AlpamayoRuntime.from_pretrained(root / "checkpoint")
        b = AlpamayoRuntime.from_pretrained(root / "checkpoint")
    assert a.model_id == b.model_id == \
        "alpamayo_r1-" + compute_model_id(locate_checkpoint(root / "checkpoint"))
    assert hashed == ["model.safetensors"]
    assert len(re.findall("hashed 1 weight file", caplog.text)) == 1


def test_a_broken_or_unwritable_cache_never_breaks_loading(root, digest_cache, tmp_path,
                                                           monkeypatch, caplog):
    cache_file, hashed = digest_cache
    ckpt = root / "checkpoint"
    expected = compute_model_id(locate_checkpoint(ckpt))
    for garbage in ("{not json", "[1, 2]", '{"version": 99, "files": {}}'):
        cache_file.write_text(garbage)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="alpamayo_ros.model.checkpoint"):
            assert compute_model_id(locate_checkpoint(ckpt)) == expected
        assert "ignoring the weight digest cache" in caplog.text
        assert json.loads(cache_file.read_text())["version"] == 1  # rewritten, usable again
    assert len(hashed) == 4
    # A cache directory that cannot be created (its parent is a file): hashed, logged, no error.
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="alpamayo_ros.model.checkpoint"):
        assert compute_model_id(locate_checkpoint(ckpt)) == expected
    assert "cannot write the weight digest cache" in caplog.text
    assert len(hashed) == 5


def test_cache_keeps_other_files_and_drops_deleted_ones(root, tmp_path, digest_cache):
    cache_file, _ = digest_cache
    ckpt = root / "checkpoint"
    compute_model_id(locate_checkpoint(ckpt))
    _shard(ckpt)  # deletes model.safetensors, writes two shards
    compute_model_id(locate_checkpoint(ckpt))
    names = sorted(Path(k).name for k in json.loads(cache_file.read_text())["files"])
    assert names == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]


def test_attention_choice():
    cpu = torch.device("cpu")
    assert choose_vlm_attention(cpu, torch.float32, None) == "sdpa"
    assert choose_vlm_attention(cpu, torch.float32, "eager") == "eager"
    with pytest.raises(ConfigError, match="flash_attention_2 needs a CUDA device"):
        choose_vlm_attention(cpu, torch.bfloat16, "flash_attention_2")
    with pytest.raises(ConfigError, match="must be one of"):
        choose_vlm_attention(cpu, torch.float32, "flex")


def test_flash_attention_is_chosen_on_cuda_when_flash_attn_is_installed(monkeypatch):
    """The CUDA branch of the choice, with flash-attn's presence simulated (neither CUDA nor
    flash-attn exists on the CI machine; choosing touches no device)."""
    import importlib.util
    real_find_spec = importlib.util.find_spec
    cuda = torch.device("cuda")
    assert choose_vlm_attention(cuda, torch.bfloat16, None) == (
        "flash_attention_2" if real_find_spec("flash_attn") is not None else "sdpa")
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: object() if name == "flash_attn"
                        else real_find_spec(name, *a))
    assert choose_vlm_attention(cuda, torch.bfloat16, None) == "flash_attention_2"
    assert choose_vlm_attention(cuda, torch.float16, None) == "flash_attention_2"
    # FlashAttention 2 has no float32 kernels: SDPA then.
    assert choose_vlm_attention(cuda, torch.float32, None) == "sdpa"
    assert choose_vlm_attention(cuda, torch.bfloat16, "flash_attention_2") == "flash_attention_2"
    assert choose_vlm_attention(torch.device("cpu"), torch.bfloat16, None) == "sdpa"


def test_loading_makes_no_network_calls(root, monkeypatch):
    import socket

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[1:] if len(args) > 1 else args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    runtime = AlpamayoRuntime.from_pretrained(root / "checkpoint")
    assert runtime.describe()["param_count"] > 0


# ------------------------------------------------------------- errors a new user meets first
def test_checkpoint_root_hints_at_its_checkpoint_subdirectory(tiny_root):
    with pytest.raises(CheckpointError) as info:
        AlpamayoRuntime.from_pretrained(str(tiny_root), device="cpu")
    message = str(info.value)
    assert "has no config.json" in message
    assert f"did you mean its subdirectory '{tiny_root / 'checkpoint'}'" in message


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_on_a_cpu_machine_names_the_parameter_and_the_flags(tiny_root):
    with pytest.raises(ConfigError) as info:
        AlpamayoRuntime.from_pretrained(str(tiny_root / "checkpoint"), device="cuda")
    message = str(info.value)
    for needed in ("model.device", "model.device:=cpu", "device:=cpu", "--device cpu"):
        assert needed in message, needed


# ------------------------------------------------------------------ damaged files (issue 9)
def _weights(root):
    return root / "checkpoint" / "model.safetensors"


def _header_size(path):
    return int.from_bytes(path.read_bytes()[:8], "little")


@pytest.mark.parametrize("damage, message", [
    (lambda d: d[:len(d) // 2], r"is truncated: have \d+ bytes, need \d+ \(header \d+ \+ tensor"),
    (lambda d: d[:100], r"is truncated or not a safetensors file: have 100 bytes, need at "
                        r"least \d+ for its header"),
    (lambda d: d[:4], r"is not a safetensors file: have 4 bytes, need at least 8"),
    (lambda d: b"", r"is not a safetensors file: have 0 bytes, need at least 8"),
    (lambda d: bytes(range(256)) * 8, r"header length field says \d+ bytes, need at most "
                                      r"100000000"),
    (lambda d: (50).to_bytes(8, "little") + b"x" * 60,
     r"its 50-byte header is not a safetensors JSON header"),
], ids=["half", "in_header", "4_bytes", "empty", "garbage", "garbage_header"])
def test_damaged_safetensors_are_refused_before_loading(root, damage, message):
    path = _weights(root)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(CheckpointError, match=message) as info:
        locate_checkpoint(root / "checkpoint")
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_truncation_numbers_are_the_files(root):
    path = _weights(root)
    data = path.read_bytes()
    path.write_bytes(data[:-1000])
    with pytest.raises(CheckpointError) as info:
        locate_checkpoint(root / "checkpoint")
    header = 8 + _header_size(path)
    assert (f"have {len(data) - 1000} bytes, need {len(data)} (header {header} + tensor data "
            f"{len(data) - header})") in str(info.value)


def test_a_damaged_shard_is_named(root):
    _shard(root / "checkpoint")
    shard = root / "checkpoint" / "model-00002-of-00002.safetensors"
    shard.write_bytes(shard.read_bytes()[:-8])
    with pytest.raises(CheckpointError, match="model-00002-of-00002.safetensors is truncated"):
        locate_checkpoint(root / "checkpoint")


def test_weights_safetensors_cannot_parse_are_a_checkpoint_error(root):
    """A complete file whose header names an unknown dtype passes the size check; the
    loader's error comes back as a CheckpointError naming the file."""
    path = _weights(root)
    data = path.read_bytes()
    size = _header_size(path)
    header = json.loads(data[8:8 + size])
    name = next(k for k in header if k != "__metadata__")
    header[name]["dtype"] = "X"
    text = json.dumps(header, separators=(",", ":")).encode()
    path.write_bytes(data[:8] + text.ljust(size) + data[8 + size:])
    with pytest.raises(CheckpointError, match=r"cannot read the weights .*model.safetensors: "
                                              r"Error while deserializing header"):
        AlpamayoRuntime.from_pretrained(root / "checkpoint", device="cpu")


def test_config_that_is_not_text_is_a_checkpoint_error(root):
    (root / "checkpoint" / "config.json").write_bytes(b"\xff\xfe\x00 not json")
    with pytest.raises(CheckpointError, match=r"checkpoint/config.json is not valid JSON: not "
                                              r"UTF-8 text"):
        locate_checkpoint(root / "checkpoint")


def test_damaged_tokenizer_json_is_a_checkpoint_error(root):
    (root / "base_vlm" / "tokenizer.json").write_text("{garbage")
    with pytest.raises(CheckpointError, match=r"cannot load the tokenizer from .*base_vlm: "):
        AlpamayoRuntime.from_pretrained(root / "checkpoint", device="cpu")


@pytest.mark.parametrize("unreadable", ["checkpoint/config.json", "checkpoint/model.safetensors",
                                        "base_vlm/config.json"])
def test_unreadable_files_are_named(root, monkeypatch, unreadable):
    """Permission denied (simulated: the tests may run as root, who may read anything)."""
    import builtins
    from pathlib import Path

    target = root / unreadable
    real_open = builtins.open
    real_read_text = Path.read_text

    def deny(path):
        if Path(path) == target:
            raise PermissionError(13, "Permission denied", str(path))

    def open_(file, *args, **kwargs):
        deny(file)
        return real_open(file, *args, **kwargs)

    def read_text(self, *args, **kwargs):
        deny(self)
        return real_read_text(self, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", open_)
    monkeypatch.setattr(Path, "read_text", read_text)
    with pytest.raises(CheckpointError, match=f"cannot read {target}: Permission denied"):
        AlpamayoRuntime.from_pretrained(root / "checkpoint", device="cpu")


@pytest.mark.skipif(not hasattr(__import__("os"), "geteuid") or __import__("os").geteuid() == 0,
                    reason="root reads files whatever their permissions")
def test_a_file_without_read_permission_is_named(root):
    config = root / "checkpoint" / "config.json"
    config.chmod(0)
    with pytest.raises(CheckpointError, match=f"cannot read {config}: Permission denied"):
        locate_checkpoint(root / "checkpoint")
