"""The fixture tests hold for other fixture sets: they run here against modified copies of
the configured set (set A by default), in a pytest subprocess with $ALPAMAYO_FIXTURE_DIR
pointing at the copy.

Variants (each a set the official recorder could have written, or one lacking files):

relaid_out   the base-VLM directory under another name (config.json's vlm_name_or_path
             follows) and the weights as an index plus two shards, as save_pretrained
             writes large models. Same content: every test passes, nothing is skipped.
mirrored     the motion mirrored left-right (y -> -y, R -> M R M with M = diag(1, -1, 1)).
             The unicycle action space and its fits commute with this mirror (curvature
             changes sign; its ridge pulls towards raw 0), so the official action-space
             outputs of the mirrored motion are the recorded ones mirrored: curvature
             n' = -n - 2 mean / std in normalised units, accelerations and v0 unchanged.
             Those are kept and must pass; every expectation that depends on the history
             values (fused history tokens and everything after the prefill) is removed,
             and the tests needing it must skip naming it. The images are unchanged.
sparse       files or keys removed: the pixel values, one expected.json key, one expected
             tensor and one input tensor; or the base-VLM directory. Nothing may fail;
             every skip names what is missing; tests that need none of it still pass.
absent       $ALPAMAYO_FIXTURE_DIR names a directory without a set: every fixture test
             skips with "not found".
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import fixture_set

torch = pytest.importorskip("torch")

pytestmark = [fixture_set.requires_fixtures, pytest.mark.fixtures]

FIXTURE_TEST_FILES = ("test/test_action_space.py", "test/test_image_processor.py",
                      "test/test_prompt.py", "test/test_model_parity.py",
                      "test/test_tiny_checkpoint.py")
# Tests of these files that never read a fixture set and take long: left out of the runs.
DESELECT = "not batch_invariance_with_other_cpu_kernels"
CUDA_SKIP = "no CUDA device on this machine"
ACTION_SPACE_TESTS = ("test_fixture_config_fields_match_checkpoint", "test_fixture_v0",
                      "test_fixture_fixed_action_trajectory",
                      "test_fixture_future_to_action_and_round_trip")
M = torch.diag(torch.tensor([1.0, -1.0, 1.0]))
# Expected tensors whose values depend on the history poses (fused history tokens, then
# the prefill, the expert and the trajectories).
HISTORY_DEPENDENT = ("input_ids", "history_token_ids", "history_token_bins",
                     "tf_full_sequence_ids", "tf_generate_input_ids", "tf_expert_position_ids",
                     "tf_step_x", "tf_step_t", "tf_step_velocity", "tf_pred_xyz",
                     "tf_pred_rot", "tf_prefill_logits_last", "tf_prefill_cache_keys_last16",
                     "tf_prefill_cache_values_last16", "tf_expert_inputs_embeds_step0",
                     "tf_expert_last_hidden_step0", "forced_generate_pred_xyz",
                     "forced_generate_pred_rot")


# ----------------------------------------------------------------------------- building


def _copy_set(dest: Path) -> Path:
    """A writable copy of the configured set (its files may be read-only)."""
    shutil.copytree(fixture_set.require_fixture_dir(), dest, copy_function=shutil.copyfile)
    for path in [dest, *dest.rglob("*")]:
        path.chmod(path.stat().st_mode | 0o200)
    return dest


def _edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data, indent=1))


def _edit_tensors(path: Path, edit) -> None:
    from safetensors.torch import load_file, save_file
    tensors = load_file(str(path))
    edit(tensors)
    save_file(tensors, str(path))


def _relaid_out(root: Path) -> None:
    from safetensors.torch import load_file, save_file
    config_path = root / "checkpoint" / "config.json"
    old = json.loads(config_path.read_text())["vlm_name_or_path"]
    (root / old).rename(root / "qwen3_vl_base_files")
    _edit_json(config_path, lambda c: c.update(vlm_name_or_path="qwen3_vl_base_files"))
    ckpt = root / "checkpoint"
    state = load_file(str(ckpt / "model.safetensors"))
    names, weight_map = sorted(state), {}
    for index in range(2):
        shard = f"model-{index + 1:05d}-of-00002.safetensors"
        save_file({k: state[k] for k in names[index::2]}, str(ckpt / shard),
                  metadata={"format": "pt"})
        weight_map.update({k: shard for k in names[index::2]})
    (ckpt / "model.safetensors").unlink()
    total = sum(t.numel() * t.element_size() for t in state.values())
    (ckpt / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=1))


def _mirror_xyz(xyz: torch.Tensor) -> torch.Tensor:
    return xyz * torch.tensor([1.0, -1.0, 1.0], dtype=xyz.dtype)


def _mirror_rot(rot: torch.Tensor) -> torch.Tensor:
    m = M.to(rot.dtype)
    return m @ rot @ m


def _mirror_quat_xyzw(quat: torch.Tensor) -> torch.Tensor:
    # M R M for R = rotation of (x, y, z, w): the quaternion (-x, y, -z, w).
    return quat * torch.tensor([-1.0, 1.0, -1.0, 1.0], dtype=quat.dtype)


def _mirrored(root: Path) -> None:
    cfg = json.loads((root / "checkpoint" / "config.json").read_text())["action_space_cfg"]
    shift = 2.0 * cfg["curvature_mean"] / cfg["curvature_std"]

    def mirror_action(action: torch.Tensor) -> torch.Tensor:
        out = action.clone()
        out[..., 1] = -action[..., 1] - shift
        return out

    def inputs(t):
        for name in list(t):
            if name.endswith("_xyz"):
                t[name] = _mirror_xyz(t[name])
            elif name.endswith("_rot"):
                t[name] = _mirror_rot(t[name])
            elif name.endswith("_quat_xyzw"):
                t[name] = _mirror_quat_xyzw(t[name])
        t["fixed_action_norm"] = mirror_action(t["fixed_action_norm"])

    def expected(t):
        for name in HISTORY_DEPENDENT:
            t.pop(name, None)
        for name in ("fixed_action_traj_xyz", "future_traj_roundtrip_xyz"):
            t[name] = _mirror_xyz(t[name])
        for name in ("fixed_action_traj_rot", "future_traj_roundtrip_rot"):
            t[name] = _mirror_rot(t[name])
        t["future_traj_action_norm"] = mirror_action(t["future_traj_action_norm"])

    _edit_tensors(root / "inputs.safetensors", inputs)
    _edit_tensors(root / "expected.safetensors", expected)


def _without_files_and_keys(root: Path) -> None:
    (root / "expected_pixel_values.npz").unlink()
    _edit_json(root / "expected.json", lambda e: e.pop("stochastic_rollout"))
    _edit_tensors(root / "expected.safetensors", lambda t: t.pop("v0"))
    _edit_tensors(root / "inputs.safetensors", lambda t: t.pop("fixed_action_norm"))


def _without_processor(root: Path) -> None:
    vlm = json.loads((root / "checkpoint" / "config.json").read_text())["vlm_name_or_path"]
    shutil.rmtree(root / vlm)


# ------------------------------------------------------------------------------ running


def _run_fixture_tests(set_dir: Path, tmp_path: Path) -> dict[str, tuple[str, str]]:
    """{test id: (outcome, message)} of the fixture test files run against set_dir."""
    report = tmp_path / "junit.xml"
    env = dict(os.environ, ALPAMAYO_FIXTURE_DIR=str(set_dir))
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", DESELECT,
         f"--junitxml={report}", *FIXTURE_TEST_FILES],
        cwd=fixture_set.REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert report.is_file(), proc.stdout[-4000:] + proc.stderr[-4000:]
    results = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome, message = child.tag, child.get("message", "")
        results[name] = outcome, message
    problems = {k: v for k, v in results.items() if v[0] in ("failure", "error")}
    assert not problems, (problems, proc.stdout[-6000:])
    assert proc.returncode == 0, proc.stdout[-6000:]
    return results


def _outcome(results, test_name):
    """(outcome, message) of test_name; a parametrized test's cases must all agree."""
    cases = [v for k, v in results.items() if k.split("::")[-1].split("[")[0] == test_name]
    assert cases, f"{test_name} did not run"
    assert len({outcome for outcome, _ in cases}) == 1, (test_name, cases)
    return cases[0]


def _skips(results):
    return {k: m for k, (o, m) in results.items() if o == "skipped"}


def test_relaid_out_set_passes_every_fixture_test(tmp_path):
    root = _copy_set(tmp_path / "set")
    _relaid_out(root)
    results = _run_fixture_tests(root, tmp_path)
    assert len(results) > 60
    assert all(CUDA_SKIP in m for m in _skips(results).values()), _skips(results)


def test_mirrored_motion_keeps_the_action_space_tests_and_skips_the_rest(tmp_path):
    root = _copy_set(tmp_path / "set")
    _mirrored(root)
    results = _run_fixture_tests(root, tmp_path)
    for name in ACTION_SPACE_TESTS + ("test_fixture_pixel_values_are_bit_exact",
                                      "test_stochastic_rollout_facts",
                                      "test_same_format_as_the_official_fixture",
                                      "test_fixture_prompt_text_and_unfused_ids"):
        assert _outcome(results, name)[0] == "passed", (name, _outcome(results, name))
    skips = _skips(results)
    lacking = [m for m in skips.values() if "fixture set lacks expected.safetensors[" in m]
    assert len(lacking) >= 8, skips
    assert all(m in lacking or CUDA_SKIP in m for m in skips.values()), skips
    assert "tf_full_sequence_ids" in _outcome(results, "test_teacher_forced_trajectory")[1]
    assert "input_ids" in _outcome(results, "test_fixture_history_fusion")[1]


SPARSE = {
    "files_and_keys": (
        _without_files_and_keys,
        ("lacks expected_pixel_values.npz", "expected.json['stochastic_rollout']",
         "expected.safetensors['v0']", "inputs.safetensors['fixed_action_norm']"),
        ("test_fixture_v0", "test_fixture_fixed_action_trajectory",
         "test_stochastic_rollout_facts", "test_fixture_pixel_values_are_bit_exact",
         "test_image0_embeddings_and_deepstack"),
        ("test_fixture_future_to_action_and_round_trip",
         "test_prepared_inputs_match_the_official_prompt", "test_fixture_history_fusion",
         "test_same_format_as_the_official_fixture")),
    "no_processor_dir": (
        _without_processor,
        ("base VLM directory",),
        ("test_fixture_pixel_values_are_bit_exact", "test_teacher_forced_trajectory",
         "test_fixture_token_ids_match_the_recorded_ones"),
        ("test_fixture_v0", "test_fixture_future_to_action_and_round_trip",
         "test_same_format_as_the_official_fixture",
         "test_tiny_template_renders_the_fixture_prompt")),
}


@pytest.mark.parametrize("variant", sorted(SPARSE))
def test_sparse_set_skips_what_it_lacks_and_runs_the_rest(tmp_path, variant):
    remove, missing, skipped, passed = SPARSE[variant]
    root = _copy_set(tmp_path / "set")
    remove(root)
    results = _run_fixture_tests(root, tmp_path)
    skips = _skips(results)
    for needle in missing:
        assert any(needle in m for m in skips.values()), (needle, skips)
    assert all(any(n in m for n in missing + (CUDA_SKIP,)) for m in skips.values()), skips
    for name in skipped:
        assert _outcome(results, name)[0] == "skipped", name
    for name in passed:
        assert _outcome(results, name)[0] == "passed", name


def test_absent_set_skips_every_fixture_test(tmp_path):
    (tmp_path / "empty").mkdir()
    results = _run_fixture_tests(tmp_path / "empty", tmp_path)
    skips = _skips(results)
    not_found = [k for k, m in skips.items() if "golden fixture set not found" in m]
    assert len(not_found) >= 25, skips
    for name in ("test_fixture_v0", "test_teacher_forced_trajectory",
                 "test_same_format_as_the_official_fixture", "test_fixture_history_fusion"):
        assert _outcome(results, name)[0] == "skipped", name
    # Everything that needs no set still runs.
    assert sum(1 for o, _ in results.values() if o == "passed") >= 30
