"""Parity of our network, decode loop and flow matching with the official model (set A).

Every expectation and dimension comes from the fixture files (see their README): the
checkpoint is loaded through AlpamayoRuntime.from_pretrained, the loader users use for the
released weights. Tolerances are the README's suggestions for a float32 re-implementation.
"""
import re

import numpy as np
import pytest
import torch

from fixture_set import (base_vlm_dir, load_expected, load_expected_tensors, load_inputs,
                         pixel_values, require_fixture_dir, requires_fixtures)

from alpamayo_ros.core.types import InferenceOptions, ModelInput
from alpamayo_ros.model import generation
from alpamayo_ros.model.checkpoint import load_state_dict, locate_checkpoint
from alpamayo_ros.model.modeling import expert_velocity

pytestmark = [requires_fixtures, pytest.mark.fixtures]

VELOCITY_TOL = 1e-4    # per-step velocity given the recorded x
XYZ_TOL = 1e-3         # m
ROT_TOL = 1e-5
DEBUG_TOL = 1e-4       # debug activations (float32 rounding only)


@pytest.fixture(scope="module")
def runtime():
    from alpamayo_ros.model.runtime import AlpamayoRuntime

    torch.set_num_threads(1)
    processor_dir = base_vlm_dir()  # skips when the set lacks it
    runtime = AlpamayoRuntime.from_pretrained(require_fixture_dir() / "checkpoint")
    assert runtime.processor_dir == processor_dir.resolve()  # found through vlm_name_or_path
    return runtime


def _model_input():
    inputs = load_inputs()
    frames = inputs["image_frames"].permute(0, 1, 3, 4, 2).numpy()  # (4,4,3,H,W) -> HWC
    return ModelInput(frames=frames,
                      history_xyz=inputs["ego_history_xyz"][0, 0].double().numpy(),
                      history_rot=inputs["ego_history_rot"][0, 0].double().numpy())


@pytest.fixture(scope="module")
def teacher_forced(runtime):
    """Prefill over tf_full_sequence_ids[:, :-1] (everything up to <|traj_future_start|>)."""
    expected = load_expected_tensors()
    ids = expected["tf_full_sequence_ids"][:, :-1]
    cache = generation.PreallocatedKVCache(runtime.network.num_layers,
                                           ids.shape[1] + expected["tf_step_x"].shape[2], 1)
    with torch.inference_mode():
        result = generation.prefill(runtime.network, ids, torch.from_numpy(pixel_values()),
                                    expected["image_grid_thw"], cache)
    return result, cache


def _first_future_start_offset(sequence, token):
    return int((sequence == token).nonzero()[0, -1]) + 1


def test_loader_builds_the_official_parameter_count(runtime):
    assert runtime.describe()["param_count"] == load_expected()["param_count"]
    assert runtime.describe()["dtype"] == "float32"
    assert runtime.token_ids.vocab_size == load_expected()["ids"]["vocab_size"]


def test_prepared_inputs_match_the_official_prompt(runtime):
    expected = load_expected_tensors()
    with torch.inference_mode():
        prepared = runtime.prepare_inputs(_model_input())
    assert torch.equal(prepared.input_ids, expected["input_ids"])
    assert torch.equal(prepared.image_grid_thw, expected["image_grid_thw"])


def test_image0_embeddings_and_deepstack(runtime):
    expected = load_expected_tensors()
    grid = expected["image_grid_thw"][:1]
    patches = int(grid.prod())
    with torch.inference_mode():
        embeds, deepstack = runtime.network.vlm.model.get_image_features(
            torch.from_numpy(pixel_values()[:patches]), grid)
    torch.testing.assert_close(embeds[0], expected["image0_embeds"], atol=DEBUG_TOL, rtol=0)
    torch.testing.assert_close(torch.stack(deepstack), expected["image0_deepstack_embeds"],
                               atol=DEBUG_TOL, rtol=0)


def test_rope_deltas_and_prefill_length(teacher_forced):
    result, cache = teacher_forced
    expected, facts = load_expected_tensors(), load_expected()
    assert result.rope_deltas == int(expected["tf_rope_deltas"].item())
    assert cache.get_seq_length() == facts["tf_prefill_seq_len"]
    assert cache.get_seq_length() == facts["tf_cache_len_before_expert"]


def test_prefill_logits_and_cache(teacher_forced):
    result, cache = teacher_forced
    expected = load_expected_tensors()
    torch.testing.assert_close(result.last_logits, expected["tf_prefill_logits_last"],
                               atol=DEBUG_TOL, rtol=0)
    last = expected["tf_prefill_cache_keys_last16"].shape[3]
    keys = torch.stack([layer.cached()[0][:, :, -last:] for layer in cache.layers])
    values = torch.stack([layer.cached()[1][:, :, -last:] for layer in cache.layers])
    torch.testing.assert_close(keys, expected["tf_prefill_cache_keys_last16"],
                               atol=DEBUG_TOL, rtol=0)
    torch.testing.assert_close(values, expected["tf_prefill_cache_values_last16"],
                               atol=DEBUG_TOL, rtol=0)


def _expert_setup(runtime, teacher_forced):
    result, cache = teacher_forced
    expected, facts = load_expected_tensors(), load_expected()
    sequence = expected["tf_full_sequence_ids"][0]
    offset = _first_future_start_offset(sequence[:-1], runtime.token_ids.traj_future_start)
    assert offset == facts["tf_offset"]
    offsets = torch.tensor([offset])
    cache_len = cache.get_seq_length()
    num_actions = expected["tf_step_x"].shape[2]
    mask = generation.expert_attention_mask(offsets, cache_len, num_actions, torch.float32,
                                            runtime.network.spec.expert_non_causal_attention)
    position_ids = generation.expert_position_ids(offsets, result.rope_deltas, num_actions)
    return cache, cache_len, offsets, mask, position_ids


def test_expert_position_ids_and_mask_facts(runtime, teacher_forced):
    _, cache_len, _, mask, position_ids = _expert_setup(runtime, teacher_forced)
    facts = load_expected()
    assert torch.equal(position_ids, load_expected_tensors()["tf_expert_position_ids"])
    assert list(mask.shape) == facts["tf_expert_attention_mask_shape"]
    masked_cols = (mask[0, 0, 0] < 0).nonzero().flatten().tolist()
    assert masked_cols == facts["tf_expert_attention_mask_masked_cols"]
    assert runtime.network.spec.expert_non_causal_attention is (not facts["tf_expert_is_causal"])
    # non-causal: the last action query row sees exactly what the first one sees
    assert torch.equal(mask[0, 0, 0], mask[0, 0, -1])


def test_step_velocities_given_recorded_x(runtime, teacher_forced):
    cache, cache_len, _, mask, position_ids = _expert_setup(runtime, teacher_forced)
    expected = load_expected_tensors()
    steps = expected["tf_step_x"].shape[0]
    with torch.inference_mode():
        for k in range(steps):
            v, embeds, hidden = expert_velocity(
                runtime.network, expected["tf_step_x"][k], expected["tf_step_t"][k], cache,
                position_ids, mask, cache_len, return_hidden=True)
            assert cache.get_seq_length() == cache_len
            if k == 0:
                torch.testing.assert_close(embeds, expected["tf_expert_inputs_embeds_step0"],
                                           atol=DEBUG_TOL, rtol=0)
                torch.testing.assert_close(hidden, expected["tf_expert_last_hidden_step0"],
                                           atol=DEBUG_TOL, rtol=0)
            torch.testing.assert_close(v, expected["tf_step_velocity"][k], atol=VELOCITY_TOL,
                                       rtol=0, msg=lambda m: f"Euler step {k}: {m}")


def test_teacher_forced_trajectory(runtime, teacher_forced):
    cache, cache_len, offsets, _, _ = _expert_setup(runtime, teacher_forced)
    expected, inputs, facts = load_expected_tensors(), load_inputs(), load_expected()
    result, _ = teacher_forced
    calls = []
    with torch.inference_mode():
        actions = generation.sample_actions(
            runtime.network, cache, cache_len, offsets, result.rope_deltas,
            inputs["diffusion_init_noise"], steps=expected["tf_step_x"].shape[0],
            record=lambda k, x, t, v: calls.append((x.clone(), t.clone())))
    assert len(calls) == facts["tf_num_expert_calls"]
    torch.testing.assert_close(torch.stack([c[1] for c in calls]), expected["tf_step_t"])
    traj = runtime.action_space.action_to_traj(actions, inputs["ego_history_xyz"][:, 0],
                                               inputs["ego_history_rot"][:, 0])
    torch.testing.assert_close(traj["xyz"], expected["tf_pred_xyz"][:, 0, 0], atol=XYZ_TOL, rtol=0)
    torch.testing.assert_close(traj["rot"], expected["tf_pred_rot"][:, 0, 0], atol=ROT_TOL, rtol=0)


@pytest.mark.parametrize("path", ["eager", "fast"])
def test_forced_real_decoding_cross_check(runtime, path):
    """Our decode loop (prefill of the prompt + token-by-token) forced to the continuation,
    on the eager reference path and on the fast path (static cache, captured steps)."""
    expected, inputs, facts = load_expected_tensors(), load_inputs(), load_expected()
    continuation = expected["tf_continuation_ids"][0]
    options = InferenceOptions(num_samples=1, max_coc_tokens=256)
    with torch.inference_mode():
        prepared = runtime.prepare_inputs(_model_input())
        raw = runtime.run_prepared(prepared, options, inputs["diffusion_init_noise"].numpy(),
                                   forced_tokens=continuation, path=path)
        samples = runtime.to_samples(raw, prepared)
    assert raw.path == path
    # Decoding stops one step after <|traj_future_start|>: the extra token is never needed.
    stop = int((continuation == runtime.token_ids.traj_future_start).nonzero()[0, 0]) + 1
    assert torch.equal(raw.tokens[0], continuation[:stop])
    assert raw.rope_deltas == int(expected["tf_rope_deltas"].item())
    assert raw.cache_len == facts["tf_prefill_seq_len"]
    assert raw.offsets.tolist() == [facts["tf_offset"]]
    np.testing.assert_allclose(samples[0].xyz,
                               expected["forced_generate_pred_xyz"][0, 0, 0].numpy(),
                               atol=XYZ_TOL, rtol=0)
    np.testing.assert_allclose(samples[0].rot,
                               expected["forced_generate_pred_rot"][0, 0, 0].numpy(),
                               atol=ROT_TOL, rtol=0)
    assert samples[0].coc == facts["forced_generate_extra_cot"][0][0][0]
    # The reasoning ended (was not truncated) iff the continuation closes it.
    assert samples[0].coc_truncated is (runtime.token_ids.cot_end not in continuation[:stop])
    assert samples[0].coc_token_count == stop


@pytest.mark.parametrize("path", ["eager", "fast"])
def test_stochastic_rollout_facts(runtime, path, monkeypatch):
    """Sampling with the set's call arguments: the recorded shapes, and per sample the
    official rule for where the expert attends and what CoC comes out, whether or not the
    sample ended its reasoning within the budget (random weights rarely do; which samples
    do depends on the random stream, which differs from the official one); both paths."""
    monkeypatch.setattr(runtime, "fast_path", path == "fast")
    facts = load_expected()["stochastic_rollout"]
    num_samples = int(re.search(r"num_traj_samples=(\d+)", facts["call"]).group(1))
    budget = int(re.search(r"max_generation_length=(\d+)", facts["call"]).group(1))
    seed = int(re.search(r"manual_seed\((\d+)\)", facts["call"]).group(1))
    assert list(facts["pred_xyz_shape"][2:3]) == [num_samples]
    options = InferenceOptions(num_samples=num_samples, max_coc_tokens=budget, seed=seed)
    model_input = _model_input()
    ids = runtime.token_ids
    with torch.inference_mode():
        prepared = runtime.prepare_inputs(model_input)
        raw = runtime.run_prepared(prepared, options)
    assert raw.path == path
    prompt_len = prepared.input_ids.shape[1]
    assert raw.tokens.shape[0] == num_samples and raw.tokens.shape[1] <= budget
    output = runtime.predict(model_input, options)
    assert len(output.samples) == num_samples
    for row, sample in enumerate(output.samples):
        tokens = raw.tokens[row]
        ends = (tokens == ids.traj_future_start).nonzero().flatten()
        assert bool(raw.found[row]) is (len(ends) > 0)
        if len(ends):  # offset = first <|traj_future_start|> + 1
            assert int(raw.offsets[row]) == prompt_len + int(ends[0]) + 1
        else:  # the official fallback: offset = sequence length, CoC "" and truncated
            assert raw.tokens.shape[1] == budget
            assert int(raw.offsets[row]) == prompt_len + budget
            assert sample.coc == "" and sample.coc_truncated
            assert sample.coc_token_count == budget
        assert sample.xyz.shape == tuple(facts["pred_xyz_shape"][3:])
        assert sample.rot.shape == tuple(facts["pred_rot_shape"][3:])
        np.testing.assert_allclose(sample.rot @ np.swapaxes(sample.rot, 1, 2),
                                   np.broadcast_to(np.eye(3), sample.rot.shape), atol=1e-5)
        assert facts["pred_xyz_z_equals_history_z_t0"]
        np.testing.assert_allclose(sample.xyz[:, 2], model_input.history_xyz[-1, 2], atol=1e-6)
    if not bool(raw.found.any()):
        assert raw.cache_len == prompt_len + budget - 1
    assert output.v0 == pytest.approx(float(load_expected_tensors()["v0"][0]), rel=1e-5)


def test_bfloat16_runs_with_the_official_autocast_numerics_and_stays_close():
    """bf16 (the CUDA default) as the official run does it (from_pretrained(dtype=bf16)
    inside torch.autocast(bf16)): the Fourier freqs are bf16 like every loaded tensor but
    the angles float32; the action expert reads float32 embeddings (LayerNorm under
    autocast) and float32 rotary tables, the VLM's stay bf16; the action-space buffers stay
    float32. The trajectory stays near the float32 official one. bf16 has an 8-bit mantissa
    (relative precision 2^-8 = 0.4 %), so only a loose bound: 0.5 % of the official path's
    length (0.23 m on set A's 46 m path)."""
    from alpamayo_ros.model.runtime import AlpamayoRuntime

    expected, inputs = load_expected_tensors(), load_inputs()
    base_vlm_dir()  # skips when the set lacks it
    runtime = AlpamayoRuntime.from_pretrained(require_fixture_dir() / "checkpoint",
                                              dtype=torch.bfloat16)
    net = runtime.network
    assert net.vlm.lm_head.weight.dtype == torch.bfloat16
    freqs = net.action_in_proj.timestep_fourier_encoder.freqs
    files = locate_checkpoint(require_fixture_dir() / "checkpoint")
    stored = load_state_dict(files, device="cpu", dtype=None)[
        "action_in_proj.timestep_fourier_encoder.freqs"]
    assert freqs.dtype == torch.bfloat16 and torch.equal(freqs, stored.to(torch.bfloat16))
    assert net.action_space.accel_std.dtype == torch.float32
    seen = {}

    def record(name):
        def hook(module, args, output):
            seen.setdefault(name, set()).add(
                (output[0] if isinstance(output, tuple) else output).dtype)
        return hook

    hooks = [net.action_in_proj.register_forward_hook(record("expert embeddings")),
             net.expert.rotary_emb.register_forward_hook(record("expert rotary")),
             net.vlm.model.language_model.rotary_emb.register_forward_hook(record("vlm rotary"))]
    try:
        for path in ("eager", "fast"):
            with torch.inference_mode():
                prepared = runtime.prepare_inputs(_model_input())
                raw = runtime.run_prepared(prepared, InferenceOptions(),
                                           inputs["diffusion_init_noise"].numpy(),
                                           forced_tokens=expected["tf_continuation_ids"][0],
                                           path=path)
                sample = runtime.to_samples(raw, prepared)[0]
            assert raw.actions.dtype == torch.float32 and raw.path == path
            np.testing.assert_allclose(sample.xyz, expected["tf_pred_xyz"][0, 0, 0].numpy(),
                                       atol=0.25)
    finally:
        for hook in hooks:
            hook.remove()
    assert seen == {"expert embeddings": {torch.float32}, "expert rotary": {torch.float32},
                    "vlm rotary": {torch.bfloat16}}


def test_vision_encoder_treats_frames_independently(runtime):
    """Each frame's vision features (merged embeddings and DeepStack features) are the same
    whether the encoder sees all 16 frames at once, a tick's 4 new frames, or one frame: the
    condition for reusing them across ticks (see model/fast_path.py)."""
    expected = load_expected_tensors()
    grid = expected["image_grid_thw"]
    patches = torch.from_numpy(pixel_values())
    per_frame = patches.shape[0] // grid.shape[0]
    engine = runtime.engine
    with torch.inference_mode():
        together = engine.encode_images(patches, grid)
        split = (engine.encode_images(patches[:12 * per_frame], grid[:12])
                 + engine.encode_images(patches[12 * per_frame:], grid[12:]))
        alone = [engine.encode_images(patches[i * per_frame:(i + 1) * per_frame],
                                      grid[i:i + 1])[0] for i in (0, 5, 15)]
    torch.testing.assert_close(together[0].embeds, expected["image0_embeds"], atol=DEBUG_TOL,
                               rtol=0)
    for index, features in zip(list(range(16)) + [0, 5, 15], split + alone):
        torch.testing.assert_close(features.embeds, together[index].embeds, atol=1e-6, rtol=0)
        for mine, theirs in zip(features.deepstack, together[index].deepstack):
            torch.testing.assert_close(mine, theirs, atol=1e-6, rtol=0)


def test_prefill_with_reused_vision_features_equals_the_single_forward(runtime):
    """Item: cached and uncached give the same prefill logits (float32, CPU). The fast
    prefill from features computed in two earlier batches (as across two ticks) equals the
    eager prefill, one Qwen3-VL forward over pixels, and the official recording."""
    expected = load_expected_tensors()
    ids = expected["tf_full_sequence_ids"][:, :-1]
    grid = expected["image_grid_thw"]
    patches = torch.from_numpy(pixel_values())
    per_frame = patches.shape[0] // grid.shape[0]
    engine = runtime.engine
    with torch.inference_mode():
        eager_cache = generation.PreallocatedKVCache(runtime.network.num_layers,
                                                     ids.shape[1], 1)
        eager = generation.prefill(runtime.network, ids, patches, grid, eager_cache)
        engine.clear_vision_cache()
        keys = tuple(range(16))
        # The previous tick: 12 of these frames and 4 older ones (stand-ins: frames 0..3).
        previous = torch.cat([patches[:12 * per_frame], patches[:4 * per_frame]])
        engine.frame_features(previous, grid, range(16),
                              keys[:12] + tuple(("older", i) for i in range(4)))
        missing = engine.missing_frames(keys)
        assert missing == [12, 13, 14, 15]
        features = engine.frame_features(patches[12 * per_frame:], grid, missing, keys)
        state = engine.state_for(1, ids.shape[1], 1)
        logits, rope_deltas = engine.prefill(state, ids, grid, features)
    torch.testing.assert_close(logits, eager.last_logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(logits, expected["tf_prefill_logits_last"], atol=DEBUG_TOL,
                               rtol=0)
    assert int(rope_deltas) == eager.rope_deltas == int(expected["tf_rope_deltas"].item())
    last = expected["tf_prefill_cache_keys_last16"].shape[3]
    end = ids.shape[1]
    keys_last = torch.stack([layer.keys[:, :, end - last:end] for layer in state.cache.layers])
    torch.testing.assert_close(keys_last, expected["tf_prefill_cache_keys_last16"],
                               atol=DEBUG_TOL, rtol=0)
    for mine, theirs in zip(state.cache.layers, eager_cache.layers):
        torch.testing.assert_close(mine.keys[:, :, :end], theirs.cached()[0], atol=1e-5,
                                   rtol=0)


def test_fast_path_step_velocities_and_teacher_forced_trajectory(runtime):
    """The fast path's flow-matching step (fixed action slots, mask over the whole static
    cache) against the recorded velocities given the recorded x, and its 10-step
    trajectory against the official teacher-forced one."""
    expected, inputs, facts = load_expected_tensors(), load_inputs(), load_expected()
    ids = expected["tf_full_sequence_ids"][:, :-1]
    engine = runtime.engine
    steps = expected["tf_step_x"].shape[0]
    with torch.inference_mode():
        engine.clear_vision_cache()
        features = engine.frame_features(torch.from_numpy(pixel_values()),
                                         expected["image_grid_thw"], range(16), None)
        state = engine.state_for(1, ids.shape[1], 8)
        _, rope_deltas = engine.prefill(state, ids, expected["image_grid_thw"], features)
        offsets = torch.tensor([facts["tf_offset"]])
        runner = engine.flow_runner(state, steps)
        actions = engine.sample_actions(state, runner, steps, offsets, ids.shape[1],
                                        rope_deltas, inputs["diffusion_init_noise"])
        assert torch.equal(state.expert_positions, expected["tf_expert_position_ids"])
        for k in range(steps):
            x = expected["tf_step_x"][k]
            state.x.copy_(x)
            state.flow_step.fill_(k)
            runner()
            velocity = (state.x - x) * steps
            torch.testing.assert_close(velocity, expected["tf_step_velocity"][k],
                                       atol=VELOCITY_TOL, rtol=0,
                                       msg=lambda m: f"Euler step {k}: {m}")
    traj = runtime.action_space.action_to_traj(actions, inputs["ego_history_xyz"][:, 0],
                                               inputs["ego_history_rot"][:, 0])
    torch.testing.assert_close(traj["xyz"], expected["tf_pred_xyz"][:, 0, 0], atol=XYZ_TOL, rtol=0)
    torch.testing.assert_close(traj["rot"], expected["tf_pred_rot"][:, 0, 0], atol=ROT_TOL, rtol=0)
