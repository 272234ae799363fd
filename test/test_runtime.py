"""AlpamayoRuntime on the tiny checkpoint: output contract, determinism, decode/stop rules,
expert mask and cache handling."""
import numpy as np
import pytest
import torch

from alpamayo_ros.core.errors import ConfigError, ModelInputError
from alpamayo_ros.core.types import (NUM_WAYPOINTS, WAYPOINT_OFFSETS, InferenceOptions,
                                     ModelInput)
from alpamayo_ros.model import generation
from alpamayo_ros.model.runtime import AlpamayoRuntime


@pytest.fixture(scope="module")
def runtime(tmp_path_factory):
    from alpamayo_ros.model.tiny_checkpoint import write_tiny_checkpoint

    torch.set_num_threads(1)
    checkpoint = write_tiny_checkpoint(tmp_path_factory.mktemp("tiny"), seed=0)
    return AlpamayoRuntime.from_pretrained(checkpoint)


def _model_input(height=64, width=96, speed=6.0):
    yy, xx = np.mgrid[0:height, 0:width]
    frames = np.stack([np.stack([(xx * (k + 1)) % 256, (yy * 3) % 256, (xx + yy + 9 * k) % 256],
                                axis=-1) for k in range(16)]).astype(np.uint8)
    t = np.linspace(-1.5, 0.0, 16)
    xyz = np.stack([speed * t, np.zeros(16), np.zeros(16)], axis=1)
    rot = np.tile(np.eye(3), (16, 1, 1))
    return ModelInput(frames=frames, history_xyz=xyz, history_rot=rot)


SHORT = dict(max_coc_tokens=12, diffusion_steps=4)


@pytest.fixture(params=["fast", "eager"])
def each_path(runtime, monkeypatch, request):
    """The runtime with predict on the fast path, then on the eager reference path."""
    monkeypatch.setattr(runtime, "fast_path", request.param == "fast")
    return runtime


def test_output_contract(each_path):
    options = InferenceOptions(num_samples=2, seed=3, **SHORT)
    out = each_path.predict(_model_input(), options)
    assert len(out.samples) == 2
    np.testing.assert_allclose(out.waypoint_offsets, WAYPOINT_OFFSETS)
    assert out.waypoint_offsets[0] == pytest.approx(0.1)
    assert out.waypoint_offsets[-1] == pytest.approx(6.4)
    assert out.v0 == pytest.approx(6.0, rel=1e-3)
    family, _, digest = out.model_id.partition("-")
    assert out.model_id == each_path.model_id and len(digest) == 12
    assert family == "alpamayo_r1" == each_path.describe()["family"]
    for sample in out.samples:
        assert sample.xyz.shape == (NUM_WAYPOINTS, 3) and sample.rot.shape == (NUM_WAYPOINTS, 3, 3)
        for name in ("yaw", "speed", "acceleration", "curvature"):
            assert getattr(sample, name).shape == (NUM_WAYPOINTS,)
        assert np.isfinite(sample.xyz).all()
        np.testing.assert_allclose(sample.rot @ np.swapaxes(sample.rot, 1, 2),
                                   np.broadcast_to(np.eye(3), sample.rot.shape), atol=1e-5)
        # first waypoint: one 0.1 s unicycle step from v0
        assert sample.speed[0] == pytest.approx(out.v0 + 0.1 * sample.acceleration[0], abs=1e-4)
        assert 1 <= sample.coc_token_count <= options.max_coc_tokens
    timings = out.timings
    for name in ("preprocess", "vision_prefill", "coc_decode", "diffusion", "postprocess"):
        assert getattr(timings, name) > 0.0
    assert timings.total == pytest.approx(sum(getattr(timings, n) for n in (
        "preprocess", "vision_prefill", "coc_decode", "diffusion", "postprocess")))


def test_same_seed_same_output_and_other_seed_differs(each_path):
    model_input = _model_input()
    first = each_path.predict(model_input, InferenceOptions(num_samples=3, seed=11, **SHORT))
    second = each_path.predict(model_input, InferenceOptions(num_samples=3, seed=11, **SHORT))
    other = each_path.predict(model_input, InferenceOptions(num_samples=3, seed=12, **SHORT))
    for a, b in zip(first.samples, second.samples):
        np.testing.assert_array_equal(a.xyz, b.xyz)
        assert a.coc == b.coc and a.coc_token_count == b.coc_token_count
        assert a.coc_truncated == b.coc_truncated
    assert not np.array_equal(first.samples[0].xyz, other.samples[0].xyz)


def test_initial_noise_fixes_the_trajectory_under_greedy_decoding(each_path):
    noise = np.random.default_rng(5).standard_normal((2, NUM_WAYPOINTS, 2)).astype(np.float32)
    model_input = _model_input()
    greedy = dict(num_samples=2, sample_coc=False, **SHORT)
    a = each_path.predict(model_input, InferenceOptions(seed=1, **greedy), initial_noise=noise)
    b = each_path.predict(model_input, InferenceOptions(seed=99, **greedy), initial_noise=noise)
    for x, y in zip(a.samples, b.samples):
        np.testing.assert_array_equal(x.xyz, y.xyz)
    # greedy rows share the prompt, so different noise is the only difference between rows
    assert not np.array_equal(a.samples[0].xyz, a.samples[1].xyz)
    need = r"initial_noise must be \(2, 64, 2\) for 2 samples, have \(1, 64, 2\)"
    with pytest.raises(ModelInputError, match=need):
        each_path.predict(model_input, InferenceOptions(num_samples=2, **SHORT),
                          initial_noise=noise[:1])


def test_greedy_truncation_reports_cut_off_reasoning(each_path):
    # The tiny model's greedy reasoning never reaches <|traj_future_start|> (see tiny_checkpoint).
    out = each_path.predict(_model_input(), InferenceOptions(num_samples=1, sample_coc=False,
                                                             max_coc_tokens=5, diffusion_steps=2))
    sample = out.samples[0]
    assert sample.coc_truncated and sample.coc_token_count == 5 and sample.coc == ""


def test_invalid_inputs_and_options_are_refused(runtime):
    bad = _model_input()
    with pytest.raises(ModelInputError, match=r"R1 checkpoint takes 16 frames of the cameras "
                                              r"\[0, 1, 2, 6\], have 12 frames"):
        runtime.predict(ModelInput(bad.frames[:12], bad.history_xyz, bad.history_rot),
                        InferenceOptions(**SHORT))
    with pytest.raises(ModelInputError, match="R1 checkpoint takes no navigation text"):
        runtime.predict(ModelInput(bad.frames, bad.history_xyz, bad.history_rot,
                                   navigation_text="Turn left in 40m"), InferenceOptions(**SHORT))
    with pytest.raises(ModelInputError, match=r"of the cameras \[0, 1, 2, 3\]"):
        runtime.predict(ModelInput(bad.frames, bad.history_xyz, bad.history_rot,
                                   camera_indices=(0, 1, 2, 3)), InferenceOptions(**SHORT))
    # Options check themselves when they are made (the parameter table's ranges).
    with pytest.raises(ConfigError, match="num_samples: have 0, need >= 1"):
        InferenceOptions(num_samples=0)
    with pytest.raises(ConfigError, match="diffusion_steps: have 0, need >= 1"):
        InferenceOptions(diffusion_steps=0)


def test_describe(runtime):
    info = runtime.describe()
    assert info["device"] == "cpu" and info["dtype"] == "float32"
    assert info["attn_implementation"] == "sdpa" and info["expert_attn_implementation"] == "sdpa"
    assert info["param_count"] == sum(p.numel() for p in runtime.network.parameters())
    assert info["model_id"] == runtime.model_id


def _prefilled(runtime, rows, capacity_extra=80):
    with torch.inference_mode():
        prepared = runtime.prepare_inputs(_model_input())
        cache = generation.PreallocatedKVCache(runtime.network.num_layers,
                                               prepared.input_ids.shape[1] + capacity_extra, rows)
        result = generation.prefill(runtime.network, prepared.input_ids, prepared.pixel_values,
                                    prepared.image_grid_thw, cache)
    return prepared, cache, result


def _settings(runtime, max_new, sample=False):
    ids = runtime.token_ids
    return generation.DecodeSettings(traj_future_start=ids.traj_future_start,
                                     banned_start=ids.traj_token_start,
                                     banned_stop=ids.traj_token_end, max_new_tokens=max_new,
                                     sample=sample)


def test_stop_one_step_after_traj_future_start(runtime):
    prepared, cache, result = _prefilled(runtime, rows=2)
    ids = runtime.token_ids
    word = 300
    forced = torch.tensor([word, word, ids.cot_end, ids.traj_future_start, word, word])
    with torch.inference_mode():
        decoded = generation.decode_coc(runtime.network, cache, result, _settings(runtime, 10),
                                        2, forced_tokens=forced)
    prompt_len = prepared.input_ids.shape[1]
    assert decoded.tokens.shape == (2, 4)  # stopped at <|traj_future_start|>
    assert decoded.cache_len == prompt_len + 4  # ... and its KV was fed
    assert decoded.offsets.tolist() == [prompt_len + 4] * 2
    assert decoded.found.tolist() == [True, True]


def test_budget_exhausted_uses_seq_len_offset(runtime):
    prepared, cache, result = _prefilled(runtime, rows=1)
    with torch.inference_mode():
        decoded = generation.decode_coc(runtime.network, cache, result, _settings(runtime, 7), 1)
    prompt_len = prepared.input_ids.shape[1]
    assert decoded.tokens.shape == (1, 7) and not bool(decoded.found.any())
    assert decoded.cache_len == prompt_len + 6  # the last token is never fed
    assert decoded.offsets.tolist() == [decoded.seq_len] == [prompt_len + 7]


def test_sampling_never_emits_trajectory_tokens():
    settings = generation.DecodeSettings(traj_future_start=9, banned_start=4, banned_stop=8,
                                         max_new_tokens=1, sample=True)
    logits = torch.zeros(64, 10)
    logits[:, 4:8] = 50.0  # the banned <iN> ids would win every draw
    from transformers import TemperatureLogitsWarper, TopPLogitsWarper

    warpers = [TemperatureLogitsWarper(0.6), TopPLogitsWarper(0.98)]
    tokens = generation._choose_tokens(logits, settings, warpers, torch.Generator().manual_seed(0))
    assert not bool(((tokens >= 4) & (tokens < 8)).any())
    greedy = generation._choose_tokens(logits, generation.DecodeSettings(9, 4, 8, 1, sample=False),
                                       [], None)
    assert not bool(((greedy >= 4) & (greedy < 8)).any())


def test_cached_decoding_matches_a_full_forward(runtime):
    """Logits after incremental decoding == logits of one forward over prompt + tokens."""
    prepared, cache, result = _prefilled(runtime, rows=1)
    forced = torch.tensor([300, 301, 302])
    with torch.inference_mode():
        generation.decode_coc(runtime.network, cache, result, _settings(runtime, 3), 1,
                              forced_tokens=forced)
        # decode fed 300 and 301; compare the next-token logits with a fresh full prefill
        step_logits = generation._language_model_step(runtime.network, torch.tensor([302]),
                                                      cache, result.rope_deltas, True)
        full_ids = torch.cat([prepared.input_ids, forced[None]], dim=1)
        fresh = generation.PreallocatedKVCache(runtime.network.num_layers, full_ids.shape[1], 1)
        full = generation.prefill(runtime.network, full_ids, prepared.pixel_values,
                                  prepared.image_grid_thw, fresh)
    torch.testing.assert_close(step_logits, full.last_logits, atol=1e-4, rtol=0)


def test_expert_mask_hides_tokens_after_each_rows_offset():
    offsets = torch.tensor([5, 8])
    mask = generation.expert_attention_mask(offsets, cache_len=8, num_actions=3,
                                            dtype=torch.float32)
    assert mask.shape == (2, 1, 3, 11)
    hidden = mask < 0
    assert hidden[0, 0, 0].nonzero().flatten().tolist() == [5, 6, 7]
    assert not bool(hidden[1].any())
    causal = generation.expert_attention_mask(offsets, 8, 3, torch.float32, non_causal=False)
    # query 0 must not see actions 1, 2 (columns 9, 10); query 2 sees all actions
    assert (causal[1, 0, 0] < 0).nonzero().flatten().tolist() == [9, 10]
    assert not bool((causal[1, 0, 2] < 0).any())


def test_expert_position_ids_per_row():
    ids = generation.expert_position_ids(torch.tensor([10, 20]), rope_deltas=-4, num_actions=3)
    assert ids.shape == (3, 2, 3)
    assert ids[0].tolist() == [[6, 7, 8], [16, 17, 18]]
    assert torch.equal(ids[0], ids[2])


def test_flow_matching_leaves_the_prefix_cache_unchanged(runtime):
    prepared, cache, result = _prefilled(runtime, rows=2)
    length = cache.get_seq_length()
    before = cache.layers[0].cached()[0].clone()
    offsets = torch.full((2,), length, dtype=torch.long)
    noise = torch.randn(2, NUM_WAYPOINTS, 2, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        a = generation.sample_actions(runtime.network, cache, length, offsets, result.rope_deltas,
                                      noise, steps=3)
        b = generation.sample_actions(runtime.network, cache, length, offsets, result.rope_deltas,
                                      noise, steps=3)
    assert cache.get_seq_length() == length
    torch.testing.assert_close(cache.layers[0].cached()[0], before, atol=0, rtol=0)
    torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_cache_overflow_is_reported():
    layer = generation.PreallocatedKVLayer(capacity=4, rows=1)
    layer.update(torch.zeros(1, 2, 3, 8), torch.zeros(1, 2, 3, 8))
    from alpamayo_ros.core.errors import ModelRuntimeError

    with pytest.raises(ModelRuntimeError, match="room for 4 tokens, need 5"):
        layer.update(torch.zeros(1, 2, 2, 8), torch.zeros(1, 2, 2, 8))


@pytest.mark.parametrize("fast", [False, True])
def test_torch_failures_become_model_runtime_errors(runtime, monkeypatch, fast):
    from alpamayo_ros.core.errors import ModelRuntimeError
    from alpamayo_ros.model.fast_path import FastEngine

    def broken(*args, **kwargs):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(generation, "prefill", broken)
    monkeypatch.setattr(FastEngine, "prefill", broken)
    monkeypatch.setattr(runtime, "fast_path", fast)
    with pytest.raises(ModelRuntimeError, match="RuntimeError.*illegal memory access"):
        runtime.predict(_model_input(), InferenceOptions(**SHORT))


def test_dtype_may_be_named_by_string(runtime):
    """ROS parameters carry dtype names; the runtime converts them (and refuses unknowns)."""
    checkpoint = runtime.describe()["checkpoint"]
    named = AlpamayoRuntime.from_pretrained(checkpoint, dtype="float32")
    assert named.dtype == torch.float32
    assert AlpamayoRuntime.from_pretrained(checkpoint, dtype="auto").dtype == torch.float32
    with pytest.raises(ConfigError, match="have 'float8', need one of auto, float32"):
        AlpamayoRuntime.from_pretrained(checkpoint, dtype="float8")


def test_shared_backend_loader_builds_the_runtime_and_describes_it(runtime):
    from alpamayo_ros.model.backends import load_model
    values = {"model.backend": "alpamayo", "model.checkpoint_dir": runtime.describe()["checkpoint"],
              "model.processor_dir": "", "model.device": "cpu", "model.dtype": "float32",
              "model.fast_path": True}
    model, description = load_model(values, InferenceOptions(num_samples=2))
    assert isinstance(model, AlpamayoRuntime)
    assert description.model_id == model.model_id and description.dtype == "float32"
    assert description.options.num_samples == 2
    with pytest.raises(ConfigError, match="model.backend: have 'onnx'"):
        load_model(dict(values, **{"model.backend": "onnx"}), InferenceOptions())
    with pytest.raises(ConfigError, match="model.checkpoint_dir"):
        load_model(dict(values, **{"model.checkpoint_dir": "/nonexistent"}), InferenceOptions())


def test_reused_pixel_buffer_never_leaks_between_calls(each_path):
    """The runtime keeps one pixel_values buffer per frame size: results stay exact when
    inputs and sizes alternate."""
    options = InferenceOptions(seed=3, max_coc_tokens=8)
    first = each_path.predict(_model_input(), options)
    each_path.predict(_model_input(speed=3.0), options)            # same size, other data
    each_path.predict(_model_input(height=96, width=64), options)  # other size
    again = each_path.predict(_model_input(), options)
    np.testing.assert_array_equal(first.samples[0].xyz, again.samples[0].xyz)
    assert each_path._pixel_buffer is not None


def test_prompt_is_rendered_once_per_image_grid(runtime, monkeypatch):
    """The chat template and prompt tokenization are cached per image grid; the ids still
    equal a fresh build_input_ids for every input (history fused anew each call)."""
    from alpamayo_ros.model import prompt

    real = prompt.build_unfused_input_ids
    calls = []
    monkeypatch.setattr(prompt, "build_unfused_input_ids",
                        lambda *args, **kwargs: calls.append(1) or real(*args, **kwargs))
    runtime._unfused_prompt = None
    inputs = (_model_input(), _model_input(speed=3.0), _model_input(height=96, width=64),
              _model_input(speed=2.0))
    with torch.inference_mode():
        for model_input in inputs:
            prepared = runtime.prepare_inputs(model_input)
            need = prompt.fuse_history_tokens(
                real(runtime.tokenizer, runtime.token_ids, prepared.image_grid_thw),
                runtime.token_ids, model_input.history_xyz)
            assert torch.equal(prepared.input_ids, need)
    assert len(calls) == 3  # 64x96, 96x64, then 64x96 again


def test_close_releases_the_network(tmp_path):
    """A lifecycle cleanup calls close(): the weights are dropped (on CUDA their memory
    goes back to the device)."""
    import gc
    import weakref

    from alpamayo_ros.model.tiny_checkpoint import write_tiny_checkpoint
    checkpoint = write_tiny_checkpoint(tmp_path / "tiny", seed=1)
    runtime = AlpamayoRuntime.from_pretrained(str(checkpoint), device="cpu")
    network = weakref.ref(runtime.network)
    runtime.close()
    gc.collect()
    assert network() is None


def test_guided_call_after_an_unguided_one_of_the_same_frames(tmp_path):
    """The features the fast path kept from an unguided call of the same frame keys (the
    tick before an instruction arrives; the replay's --nav-compare "without") serve the
    guided call (guidance runs on the fast path, vision reuse included): its result
    equals a guided call without frame keys."""
    import dataclasses

    from alpamayo_ros.model.tiny_checkpoint import write_tiny_checkpoint
    runtime = AlpamayoRuntime.from_pretrained(
        write_tiny_checkpoint(tmp_path / "m15", seed=0, family="1.5"))
    base = _model_input()
    keyed = dataclasses.replace(base, frame_keys=tuple(range(16)), camera_indices=(0, 1, 2, 6))
    options = InferenceOptions(num_samples=1, seed=3, nav_guidance_scale=1.5, **SHORT)
    runtime.predict(keyed, options)  # unguided, fast path: keeps the 16 frames' features
    encoded = runtime.engine.vision_stats["encoded"]
    guided = runtime.predict(dataclasses.replace(keyed, navigation_text="Turn left in 40m"),
                             options)
    assert runtime.engine.vision_stats["encoded"] == encoded  # all 16 reused
    fresh = runtime.predict(dataclasses.replace(keyed, frame_keys=None,
                                                navigation_text="Turn left in 40m"), options)
    np.testing.assert_array_equal(guided.samples[0].xyz, fresh.samples[0].xyz)
