"""The tiny checkpoint writer: official format, determinism, CLI, and that it runs."""
import json
import re

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

import fixture_set

from alpamayo_ros.core.errors import ConfigError
from alpamayo_ros.core.types import InferenceOptions, ModelInput
from alpamayo_ros.model.checkpoint import locate_checkpoint
from alpamayo_ros.model.tiny_checkpoint import main, write_tiny_checkpoint


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return root, write_tiny_checkpoint(root, seed=0)


@pytest.fixture(scope="module")
def tiny_1_5(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny15")
    return root, write_tiny_checkpoint(root, seed=0, family="1.5")


def test_layout_and_official_config_fields(tiny):
    root, ckpt = tiny
    assert ckpt == root / "checkpoint"
    config = json.loads((ckpt / "config.json").read_text())
    assert config["model_type"] == "alpamayo_r1" and config["vlm_name_or_path"] == "base_vlm"
    assert config["action_in_proj_cfg"]["_target_"].endswith("PerWaypointActionInProjV2")
    assert config["diffusion_cfg"]["_target_"].endswith("FlowMatching")
    assert config["traj_vocab_size"] == 4000
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json",
                 "preprocessor_config.json"):
        assert (root / "base_vlm" / name).is_file()
    with safe_open(str(ckpt / "model.safetensors"), "pt") as handle:
        assert handle.metadata() == {"format": "pt"}


def _tensor_names(checkpoint_dir) -> list[str]:
    """Tensor names of a checkpoint, single-file or sharded."""
    names = []
    for path in locate_checkpoint(checkpoint_dir).weight_files:
        with safe_open(str(path), "pt") as handle:
            names.extend(handle.keys())
    return names


def _naming_scheme(names) -> set[str]:
    """Tensor names with every index replaced by N (layer counts are the set's dims)."""
    return {re.sub(r"\.\d+(?=\.|$)", ".N", name) for name in names}


@fixture_set.requires_fixtures
def test_same_format_as_the_official_fixture(tiny):
    """Our writer uses the official field names, class paths and tensor naming scheme.

    Only the format is compared: the set's dims, layer counts and constants are its own
    (the set was recorded at other sizes than our tiny model may use)."""
    _, ckpt = tiny
    ours = json.loads((ckpt / "config.json").read_text())
    official = fixture_set.checkpoint_config()
    assert sorted(ours) == sorted(official)
    for key in ("action_space_cfg", "action_in_proj_cfg", "expert_cfg", "traj_tokenizer_cfg",
                "diffusion_cfg", "hist_traj_tokenizer_cfg"):
        assert sorted(ours[key]) == sorted(official[key]), key
        assert ours[key].get("_target_") == official[key].get("_target_"), key
    official_dir = fixture_set.require_fixture_dir() / "checkpoint"
    assert _naming_scheme(_tensor_names(ckpt)) == _naming_scheme(_tensor_names(official_dir))


@fixture_set.SET_1_5.requires
def test_1_5_same_format_as_the_official_1_5_fixture(tiny_1_5):
    """--family 1.5: the official 1.5 config fields and class paths, and no buffers in the
    weights (the 1.5 checkpoint stores none)."""
    _, ckpt = tiny_1_5
    ours = json.loads((ckpt / "config.json").read_text())
    official = fixture_set.SET_1_5.checkpoint_config()
    assert sorted(ours) == sorted(official)
    for key in ("action_space_cfg", "action_in_proj_cfg", "expert_cfg", "traj_tokenizer_cfg",
                "diffusion_cfg", "hist_traj_tokenizer_cfg"):
        assert sorted(ours[key]) == sorted(official[key]), key
        assert ours[key].get("_target_") == official[key].get("_target_"), key
    for key in ("model_type", "architectures", "include_camera_ids", "include_frame_nums"):
        assert ours[key] == official[key], key
    official_dir = fixture_set.SET_1_5.require_fixture_dir() / "checkpoint"
    assert _naming_scheme(_tensor_names(ckpt)) == _naming_scheme(_tensor_names(official_dir))


def test_1_5_runs_with_cameras_and_navigation(tiny_1_5):
    """A 1.5 tiny checkpoint loads (buffers rebuilt from its config), says its family,
    and plans from 2 cameras with an instruction, with and without guidance."""
    from alpamayo_ros.model.runtime import AlpamayoRuntime

    torch.set_num_threads(1)
    runtime = AlpamayoRuntime.from_pretrained(tiny_1_5[1])
    assert runtime.describe()["family"] == "alpamayo1_5"
    assert runtime.model_id.startswith("alpamayo1_5-")
    assert float(runtime.network.action_space.accel_std) == pytest.approx(0.6810426736454882)
    frames = np.random.default_rng(0).integers(0, 256, (8, 64, 96, 3), dtype=np.uint8)
    t = np.linspace(-1.5, 0.0, 16)
    xyz = np.stack([5.0 * t, np.zeros(16), np.zeros(16)], axis=1)
    outputs = []
    for scale in (0.0, 1.5):
        model_input = ModelInput(frames, xyz, np.tile(np.eye(3), (16, 1, 1)),
                                 camera_indices=(1, 6), navigation_text="Turn left in 40m")
        out = runtime.predict(model_input, InferenceOptions(
            num_samples=2, max_coc_tokens=16, diffusion_steps=2, seed=0,
            nav_guidance_scale=scale))
        assert all(np.isfinite(s.xyz).all() for s in out.samples)
        outputs.append(out.samples[0].xyz)
    assert not np.allclose(outputs[0], outputs[1])


def test_unknown_family_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="family: have 'r2'"):
        write_tiny_checkpoint(tmp_path, family="r2")


def test_deterministic_for_a_seed(tiny, tmp_path):
    _, ckpt = tiny
    again = write_tiny_checkpoint(tmp_path / "again", seed=0)
    other = write_tiny_checkpoint(tmp_path / "other", seed=1)
    a, b, c = (load_file(str(p / "model.safetensors")) for p in (ckpt, again, other))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["vlm.lm_head.weight"], c["vlm.lm_head.weight"])
    assert (ckpt / "config.json").read_text() == (again / "config.json").read_text()


def test_weights_are_well_conditioned(tiny):
    _, ckpt = tiny
    state = load_file(str(ckpt / "model.safetensors"))
    q = state["vlm.model.language_model.layers.0.self_attn.q_proj.weight"]
    assert q.std().item() == pytest.approx(q.shape[1] ** -0.5, rel=0.1)
    norm = state["expert.norm.weight"]
    assert abs(norm.mean().item() - 1.0) < 0.1
    freqs = state["action_in_proj.timestep_fourier_encoder.freqs"].flatten()
    assert freqs[0].item() == pytest.approx(1.0) and freqs[-1].item() == pytest.approx(100.0)
    assert state["action_space.accel_std"].item() == pytest.approx(0.6810426736454882)


def test_refuses_to_overwrite_unless_asked(tiny, tmp_path):
    write_tiny_checkpoint(tmp_path, seed=0)
    with pytest.raises(ConfigError, match="exists; pass overwrite=True"):
        write_tiny_checkpoint(tmp_path, seed=0)
    assert write_tiny_checkpoint(tmp_path, seed=2, overwrite=True).is_dir()


def test_cli(tmp_path, capsys):
    assert main([str(tmp_path / "cli"), "--seed", "3"]) == 0
    assert (tmp_path / "cli" / "checkpoint" / "model.safetensors").is_file()
    assert "wrote" in capsys.readouterr().out
    assert main([str(tmp_path / "cli15"), "--family", "1.5"]) == 0
    config = json.loads((tmp_path / "cli15" / "checkpoint" / "config.json").read_text())
    assert config["model_type"] == "alpamayo1_5"


def test_runs_and_sampled_reasoning_can_end(tiny):
    from alpamayo_ros.model.runtime import AlpamayoRuntime

    torch.set_num_threads(1)
    runtime = AlpamayoRuntime.from_pretrained(tiny[1])
    frames = np.random.default_rng(0).integers(0, 256, (16, 64, 96, 3), dtype=np.uint8)
    t = np.linspace(-1.5, 0.0, 16)
    xyz = np.stack([5.0 * t, np.zeros(16), np.zeros(16)], axis=1)
    out = runtime.predict(ModelInput(frames, xyz, np.tile(np.eye(3), (16, 1, 1))),
                          InferenceOptions(num_samples=8, max_coc_tokens=64, diffusion_steps=2,
                                           seed=0))
    assert any(not s.coc_truncated for s in out.samples)
    assert all(np.isfinite(s.xyz).all() for s in out.samples)


def test_1_5_batched_guidance_equals_two_calls_per_step(tiny_1_5, monkeypatch):
    """Rows with different CoC lengths (some cut off by the token limit): the batched
    guided and unguided expert calls give the velocities of separate calls."""
    from alpamayo_ros.model import nav_guidance
    from alpamayo_ros.model.runtime import AlpamayoRuntime

    torch.set_num_threads(1)
    runtime = AlpamayoRuntime.from_pretrained(tiny_1_5[1], fast_path=False)
    frames = np.random.default_rng(1).integers(0, 256, (4, 64, 96, 3), dtype=np.uint8)
    t = np.linspace(-1.5, 0.0, 16)
    model_input = ModelInput(frames, np.stack([5.0 * t, np.zeros(16), np.zeros(16)], axis=1),
                             np.tile(np.eye(3), (16, 1, 1)), camera_indices=(1,),
                             navigation_text="Turn right in 30m")
    options = InferenceOptions(num_samples=6, max_coc_tokens=12, diffusion_steps=3, seed=5,
                               nav_guidance_scale=2.0)
    batched = runtime.predict(model_input, options)
    lengths = {s.coc_token_count for s in batched.samples}
    assert len(lengths) > 1 and any(s.coc_truncated for s in batched.samples)
    monkeypatch.setattr(nav_guidance, "batched_guided_sample_actions",
                        nav_guidance.guided_sample_actions)
    separate = runtime.predict(model_input, options)
    for a, b in zip(batched.samples, separate.samples):
        assert a.coc_token_count == b.coc_token_count
        np.testing.assert_allclose(a.xyz, b.xyz, atol=1e-4, rtol=0)
