"""Tests of alpamayo_ros.model.prompt and alpamayo_ros.model.tiny_processor."""
from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

import fixture_set
from alpamayo_ros.core.errors import CheckpointError, ModelInputError
from alpamayo_ros.model.prompt import (
    HISTORY_NUM_BINS,
    HISTORY_XYZ_MAX,
    HISTORY_XYZ_MIN,
    NUM_HISTORY_TOKENS,
    SPECIAL_TOKEN_NAMES,
    build_input_ids,
    build_unfused_input_ids,
    extract_coc,
    fuse_history_tokens,
    history_token_bins,
    load_extended_tokenizer,
    render_prompt_text,
    tokenizer_expectations_from_config,
)
from alpamayo_ros.model.tiny_processor import QWEN_SPECIAL_TOKENS, write_tiny_processor_files

# ------------------------------------------------------------------- history binning (unit)


def test_history_bins_shape_order_and_clamp():
    xyz = np.zeros((16, 3))
    xyz[0] = (-1.0, 0.5, 20.0)           # first delta: the position itself
    xyz[1:] = xyz[0]                      # later deltas 0
    bins = history_token_bins(xyz)
    assert bins.dtype == np.int64 and bins.shape == (3 * 16,)
    x_bin = round((-1.0 + 4.0) / 8.0 * 999)
    y_bin = round((0.5 + 4.0) / 8.0 * 999)
    assert bins[:3].tolist() == [x_bin, y_bin, HISTORY_NUM_BINS - 1]   # z clamped high
    zero_bins = [round(-lo / (hi - lo) * 999) for lo, hi in zip(HISTORY_XYZ_MIN, HISTORY_XYZ_MAX)]
    assert bins[3:6].tolist() == zero_bins
    xyz[1] = (-100.0, -100.0, -100.0)     # huge negative step, then back: clamped to 0 / 999
    assert history_token_bins(xyz)[3:9].tolist() == [0, 0, 0, 999, 999, 999]


def _float32_delta_scaling_to(value: float, axis: int):
    """A float32 delta d whose float32 bin position (d - min) / (max - min) * 999 is exactly
    ``value``, searched a few ulps around the real solution; None when no ulp hits it."""
    lo, hi = np.float32(HISTORY_XYZ_MIN[axis]), np.float32(HISTORY_XYZ_MAX[axis])
    d = np.float32(value / 999.0 * (float(hi) - float(lo)) + float(lo))
    for _ in range(8):
        scaled = (d - lo) / (hi - lo) * np.float32(999)
        if scaled == np.float32(value):
            return d
        d = np.nextafter(d, np.float32(np.inf) if scaled < value else np.float32(-np.inf))
    return None


def test_history_bins_round_half_to_even():
    # Deltas that land exactly on k + 0.5 (several k, both parities) on the x and y axes.
    cases = []
    for axis in (0, 1):
        for k in range(40, 60):
            d = _float32_delta_scaling_to(k + 0.5, axis)
            if d is not None:
                cases.append((k, axis, d))
    parities = {k % 2 for k, _, _ in cases}
    assert len(cases) >= 4 and parities == {0, 1}, cases
    for k, axis, d in cases:
        xyz = np.zeros((16, 3), dtype=np.float32)
        xyz[:, axis] = d                  # first delta is d, the others 0
        got = history_token_bins(xyz)[axis]
        half_even = k if k % 2 == 0 else k + 1
        assert got == half_even, (k, axis, got)
        if k % 2 == 0:
            assert got != int(np.floor(k + 0.5 + 0.5))  # floor(x + 0.5) would round up


def test_history_bins_batch_and_errors():
    rng = np.random.default_rng(0)
    batch = rng.normal(size=(3, 16, 3)).astype(np.float32)
    joint = history_token_bins(batch)
    assert joint.shape == (3, 48)
    for b in range(3):
        assert np.array_equal(joint[b], history_token_bins(batch[b]))
    with pytest.raises(ModelInputError, match="non-finite"):
        history_token_bins(np.full((16, 3), np.nan))
    with pytest.raises(ModelInputError, match=r"\(T, 3\)"):
        history_token_bins(np.zeros((16, 2)))


# ----------------------------------------------------------------------- tiny processor


@functools.lru_cache(maxsize=None)
def _tiny(tmp_root: str):
    info = write_tiny_processor_files(tmp_root)
    tokenizer, ids = load_extended_tokenizer(tmp_root)
    return info, tokenizer, ids


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return _tiny(str(tmp_path_factory.mktemp("tiny_processor")))


def test_tiny_processor_extends_and_renders_16_images(tiny):
    info, tokenizer, ids = tiny
    base = info["base_vocab_size"]
    assert ids.traj_token_start == base
    assert ids.vocab_size == base + 4000 + len(SPECIAL_TOKEN_NAMES) - 1  # image_pad reused
    assert ids.image_pad == info["image_token_id"] and ids.pad == info["pad_token_id"]
    assert ids.im_end == info["eos_token_id"]
    text = render_prompt_text(tokenizer, num_images=16)
    assert text.startswith("<|im_start|>system\nYou are a driving assistant")
    assert text.count("<|vision_start|><|image_pad|><|vision_end|>") == 16
    assert text.count("<|traj_history|>") == NUM_HISTORY_TOKENS
    assert text.endswith("<|im_start|>assistant\n<|cot_start|>")
    for token in QWEN_SPECIAL_TOKENS:
        assert len(tokenizer(token, add_special_tokens=False)["input_ids"]) == 1


def test_tiny_processor_builds_release_sized_prompt(tiny):
    _, tokenizer, ids = tiny
    grid = torch.tensor([[1, 20, 36]] * 16)
    history = np.cumsum(np.full((16, 3), 0.8), axis=0) - 12.8
    input_ids = build_input_ids(tokenizer, ids, grid, history)
    assert input_ids.shape[0] == 1
    assert int((input_ids == ids.image_pad).sum()) == 16 * 180
    assert int((input_ids == ids.traj_history).sum()) == 0
    fused = input_ids[(input_ids >= ids.hist_token_start)
                      & (input_ids < ids.hist_token_start + HISTORY_NUM_BINS)]
    assert fused.tolist() == (history_token_bins(history) + ids.hist_token_start).tolist()


def test_tiny_processor_files_are_deterministic(tmp_path):
    write_tiny_processor_files(tmp_path / "a")
    write_tiny_processor_files(tmp_path / "b")
    for path in sorted((tmp_path / "a").iterdir()):
        assert path.read_bytes() == (tmp_path / "b" / path.name).read_bytes(), path.name


@fixture_set.requires_fixtures
def test_tiny_template_renders_the_fixture_prompt(tiny):
    """Our own chat template renders the official template's prompt (the set's images)."""
    _, tokenizer, _ = tiny
    num_images = fixture_set.load_expected_tensors()["image_grid_thw"].shape[0]
    assert render_prompt_text(tokenizer, num_images) == \
        fixture_set.load_expected()["prompt_text"]


def test_fuse_refuses_wrong_slot_count(tiny):
    _, _, ids = tiny
    input_ids = torch.tensor([[1, 2] + [ids.traj_history] * 47])
    with pytest.raises(ModelInputError, match="have \\[47\\], need 48"):
        fuse_history_tokens(input_ids, ids, np.zeros((16, 3)))


def test_extract_coc_edge_cases(tiny):
    _, tokenizer, ids = tiny
    text_ids = tokenizer(" Slow down. ", add_special_tokens=False)["input_ids"]
    prompt = [5, 6, ids.cot_start]
    assert extract_coc(tokenizer, ids, prompt + text_ids + [ids.cot_end, 9]) == "Slow down."
    assert extract_coc(tokenizer, ids, text_ids + [ids.cot_end]) == "Slow down."  # no prompt
    assert extract_coc(tokenizer, ids, prompt + text_ids) == ""                   # truncated
    assert extract_coc(tokenizer, ids, torch.tensor([prompt + [ids.cot_end]])) == ""
    with pytest.raises(ModelInputError, match="one sequence"):
        extract_coc(tokenizer, ids, torch.zeros((2, 5), dtype=torch.long))


def test_missing_processor_dir_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_extended_tokenizer(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="no tokenizer files"):
        load_extended_tokenizer(tmp_path)


# ------------------------------------------------------------------------ golden fixture


@fixture_set.requires_fixtures
def test_fixture_token_ids_match_the_recorded_ones():
    _, ids = fixture_set.extended_tokenizer()
    recorded = fixture_set.load_expected()["ids"]
    special = recorded["special_token_ids"]
    assert ids.vocab_size == recorded["vocab_size"]
    assert ids.traj_token_start == recorded["traj_token_start_idx"]
    assert ids.hist_token_start == recorded["hist_token_start_idx"]
    assert ids.image_pad == recorded["image_token_id"] == special["image_pad"]
    assert ids.vision_start == recorded["vision_start_token_id"]
    assert ids.vision_end == recorded["vision_end_token_id"]
    assert ids.pad == recorded["pad_token_id"] and ids.im_end == recorded["im_end_token_id"]
    for name in ("traj_history_start", "traj_history", "traj_history_end", "cot_start",
                 "cot_end", "traj_future_start"):
        assert getattr(ids, name) == special[name], name
    tokenizer, _ = fixture_set.extended_tokenizer()
    for name, want in special.items():
        assert tokenizer.convert_tokens_to_ids(f"<|{name}|>") == want, name


@fixture_set.requires_fixtures
@pytest.mark.parametrize("field,bad,message", [
    ("expected_traj_token_start", lambda v: v + 1, "traj_token_start_idx"),
    ("expected_vocab_size", lambda v: v - 1, "vocab_size"),
    ("expected_traj_token_ids", lambda v: {**v, "history": v["history"] + 1},
     "traj_token_ids\\['history'\\]"),
])
def test_fixture_tokenizer_mismatch_is_refused(field, bad, message):
    kwargs = tokenizer_expectations_from_config(fixture_set.checkpoint_config())
    kwargs[field] = bad(kwargs[field])
    with pytest.raises(CheckpointError, match=message + ".*have .*need"):
        load_extended_tokenizer(fixture_set.base_vlm_dir(), **kwargs)


@fixture_set.requires_fixtures
def test_fixture_prompt_text_and_unfused_ids():
    tokenizer, ids = fixture_set.extended_tokenizer()
    expected = fixture_set.load_expected()
    tensors = fixture_set.load_expected_tensors()
    grid = tensors["image_grid_thw"]
    assert render_prompt_text(tokenizer, num_images=grid.shape[0]) == expected["prompt_text"]
    unfused = build_unfused_input_ids(tokenizer, ids, grid)
    assert torch.equal(unfused, tensors["input_ids_unfused"])
    assert torch.equal(torch.ones_like(unfused), tensors["attention_mask"])
    assert tokenizer.decode(unfused[0]) == expected["prompt_text_decoded_expanded"]


@fixture_set.requires_fixtures
def test_fixture_history_fusion():
    tokenizer, ids = fixture_set.extended_tokenizer()
    tensors = fixture_set.load_expected_tensors()
    hist_xyz, _ = fixture_set.history_inputs()
    input_ids = build_input_ids(tokenizer, ids, tensors["image_grid_thw"], hist_xyz[0])
    assert torch.equal(input_ids, tensors["input_ids"])
    assert torch.equal(input_ids, tensors["tf_generate_input_ids"])
    positions = torch.nonzero(tensors["input_ids_unfused"][0] == ids.traj_history)[:, 0]
    assert torch.equal(positions, tensors["history_token_positions"][0])
    assert torch.equal(input_ids[0, positions], tensors["history_token_ids"][0])
    assert np.array_equal(history_token_bins(hist_xyz[0]),
                          tensors["history_token_bins"][0].numpy())


@fixture_set.requires_fixtures
def test_fixture_coc_extraction():
    tokenizer, ids = fixture_set.extended_tokenizer()
    expected = fixture_set.load_expected()
    tensors = fixture_set.load_expected_tensors()
    want = expected["tf_extract_text_tokens_on_sequence"]["cot"][0]
    assert extract_coc(tokenizer, ids, tensors["tf_full_sequence_ids"]) == want
    assert extract_coc(tokenizer, ids, tensors["tf_continuation_ids"][0]) == want
    coc_ids = expected["ids"]["coc_token_ids"]
    assert tokenizer(want, add_special_tokens=False)["input_ids"] == coc_ids
    assert tensors["tf_continuation_ids"][0, :len(coc_ids)].tolist() == coc_ids
