"""Fast path (static KV cache, captured steps, sync-free sampling, vision reuse) against the
eager reference path on the tiny checkpoint, plus its building blocks.

On the CPU the fast path runs its fixed-shape steps without CUDA graphs, so these tests
cover the code that is captured on CUDA; the CUDA-only tests at the end (skipped here)
check the captured replays and the absence of host syncs.
"""
import dataclasses
import logging

import numpy as np
import pytest
import torch

from alpamayo_ros.core.errors import ModelInputError, ModelRuntimeError
from alpamayo_ros.core.types import NUM_WAYPOINTS, InferenceOptions, InferencePath, ModelInput
from alpamayo_ros.model import static_cache
from alpamayo_ros.model.cuda_graphs import OnceLog, StepRunner
from alpamayo_ros.model.engine import Request
from alpamayo_ros.model.fast_path import FastEngine, FastPathConfig
from alpamayo_ros.model.runtime import AlpamayoRuntime
from alpamayo_ros.model.sampling import TokenChooser, exponential_race

CUDA = torch.cuda.is_available()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from alpamayo_ros.model.tiny_checkpoint import write_tiny_checkpoint

    torch.set_num_threads(1)
    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny"), seed=0)


@pytest.fixture(scope="module")
def runtime(checkpoint):
    return AlpamayoRuntime.from_pretrained(checkpoint)


def _frames(height=64, width=96, phase=0):
    yy, xx = np.mgrid[0:height, 0:width]
    return [np.stack([(xx * (k + 1 + phase)) % 256, (yy * 3 + phase) % 256,
                      (xx + yy + 9 * k) % 256], axis=-1).astype(np.uint8) for k in range(16)]


def _model_input(frames=None, speed=6.0, keys=None):
    t = np.linspace(-1.5, 0.0, 16)
    xyz = np.stack([speed * t, np.zeros(16), np.zeros(16)], axis=1)
    return ModelInput(frames=tuple(frames if frames is not None else _frames()),
                      history_xyz=xyz, history_rot=np.tile(np.eye(3), (16, 1, 1)),
                      frame_keys=keys)


def _both_paths(runtime, options, noise=None, forced=None, model_input=None):
    with torch.inference_mode():
        prepared = runtime.prepare_inputs(model_input or _model_input())
        eager = runtime.run_prepared(prepared, options, noise, forced_tokens=forced,
                                     path="eager")
        fast = runtime.run_prepared(prepared, options, noise, forced_tokens=forced,
                                    path="fast")
    return eager, fast


def _assert_same(eager, fast, actions_atol=1e-5):
    assert torch.equal(eager.tokens, fast.tokens)
    assert torch.equal(eager.found, fast.found)
    assert torch.equal(eager.offsets, fast.offsets)
    assert (eager.cache_len, eager.rope_deltas) == (fast.cache_len, fast.rope_deltas)
    torch.testing.assert_close(fast.actions, eager.actions, atol=actions_atol, rtol=0)


# ------------------------------------------------------------------ fast == eager
@pytest.mark.parametrize("budget", [1, 2, 5, 13])
@pytest.mark.parametrize("rows", [1, 3])
def test_greedy_decode_matches_the_eager_path(runtime, budget, rows):
    """Greedy (the tiny model never stops): exact ids, cache length, offsets per budget."""
    noise = np.random.default_rng(budget).standard_normal((rows, NUM_WAYPOINTS, 2))
    options = InferenceOptions(num_samples=rows, max_coc_tokens=budget, diffusion_steps=3,
                               sample_coc=False)
    eager, fast = _both_paths(runtime, options, noise.astype(np.float32))
    assert fast.path == "fast" and eager.path == "eager"
    assert fast.tokens.shape == (rows, budget) and not bool(fast.found.any())
    _assert_same(eager, fast)


def test_forced_stop_matches_the_eager_path(runtime):
    ids = runtime.token_ids
    forced = torch.tensor([300, 301, ids.cot_end, ids.traj_future_start, 302, 303, 304])
    noise = np.random.default_rng(1).standard_normal((2, NUM_WAYPOINTS, 2)).astype(np.float32)
    options = InferenceOptions(num_samples=2, max_coc_tokens=20, diffusion_steps=4)
    eager, fast = _both_paths(runtime, options, noise, forced)
    assert fast.tokens.tolist() == [forced[:4].tolist()] * 2
    assert fast.decode_steps == 4  # one step after <|traj_future_start|>, none more
    _assert_same(eager, fast)


def test_sampled_rows_match_the_eager_path_with_the_same_seed(runtime):
    """On the CPU both paths draw the same exponentials from the same seed (torch's
    multinomial uses the exponential race for one sample), so sampled CoCs are identical,
    including rows that stop at different steps."""
    for seed in (0, 7, 21):
        options = InferenceOptions(num_samples=4, max_coc_tokens=40, diffusion_steps=4,
                                   seed=seed)
        eager, fast = _both_paths(runtime, options)
        _assert_same(eager, fast)
    assert eager.found.any()  # some row stopped on <|traj_future_start|>


@pytest.mark.parametrize("interval", [2, 3, 8])
def test_stop_checked_every_k_steps_gives_the_same_outputs(checkpoint, interval):
    """Reading the stop status only every K steps (lagged by one read, as on CUDA) runs a
    few extra steps after the stop; they change neither tokens, cache length, offsets nor
    actions (the expert mask hides what they wrote)."""
    runtime = AlpamayoRuntime.from_pretrained(
        checkpoint, fast_path_config=FastPathConfig(stop_check_interval=interval))
    ids = runtime.token_ids
    forced = torch.tensor([300, ids.cot_end, ids.traj_future_start] + [301] * 20)
    noise = np.random.default_rng(2).standard_normal((2, NUM_WAYPOINTS, 2)).astype(np.float32)
    options = InferenceOptions(num_samples=2, max_coc_tokens=23, diffusion_steps=3)
    eager, fast = _both_paths(runtime, options, noise, forced)
    _assert_same(eager, fast)
    assert fast.decode_steps > 3  # steps ran past the stop, and were harmless
    for seed in (3, 4):
        sampled = InferenceOptions(num_samples=3, max_coc_tokens=30, diffusion_steps=3,
                                   seed=seed)
        eager, fast = _both_paths(runtime, sampled, noise=np.zeros((3, NUM_WAYPOINTS, 2),
                                                                  np.float32))
        _assert_same(eager, fast)


def test_a_lagged_stop_read_runs_no_step_past_the_stop(runtime, monkeypatch):
    """On CUDA the host reads each step's stop status one step late (a step stays queued).
    That costs no step: the one step it lets run is the step that feeds
    <|traj_future_start|>, which the stop rule needs anyway."""
    ids = runtime.token_ids
    forced = torch.tensor([300, 301, ids.cot_end, ids.traj_future_start] + [302] * 20)
    noise = np.zeros((1, NUM_WAYPOINTS, 2), np.float32)
    options = InferenceOptions(num_samples=1, max_coc_tokens=24, diffusion_steps=2)
    monkeypatch.setattr(FastEngine, "stop_check_schedule", lambda self: (1, 1))
    eager, fast = _both_paths(runtime, options, noise, forced)
    _assert_same(eager, fast)
    assert eager.decode_steps == fast.decode_steps == 4


def test_same_seed_same_plan_whatever_the_stop_read_interval(checkpoint):
    """The flow-matching noise is drawn before the CoC, so a seed gives the same plan
    however many decode steps ran past the stop (CPU: none; here up to 7 with a read
    every 8 steps)."""
    every = AlpamayoRuntime.from_pretrained(checkpoint)
    rarely = AlpamayoRuntime.from_pretrained(
        checkpoint, fast_path_config=FastPathConfig(stop_check_interval=8))
    with torch.inference_mode():
        prepared = every.prepare_inputs(_model_input())
    for seed in range(40):  # a seed whose sampled CoC ends within the budget
        options = InferenceOptions(num_samples=1, max_coc_tokens=40, diffusion_steps=3,
                                   seed=seed)
        first = every.run_prepared(prepared, options)
        if bool(first.found.all()):
            break
    assert bool(first.found.all())
    second = rarely.run_prepared(prepared, options)
    assert second.decode_steps > first.decode_steps  # steps ran past the stop
    _assert_same(first, second, actions_atol=0.0)
    a, b = every.predict(_model_input(), options), rarely.predict(_model_input(), options)
    np.testing.assert_array_equal(a.samples[0].xyz, b.samples[0].xyz)


@pytest.mark.parametrize("path", ["fast", "eager"])
@pytest.mark.parametrize("where", ["logits", "velocities"])
def test_non_finite_network_outputs_are_a_model_error(checkpoint, path, where):
    """NaN logits (a damaged lm_head row) or NaN velocities (a damaged action_out_proj)
    end the call with ModelRuntimeError naming them, never a plan."""
    runtime = AlpamayoRuntime.from_pretrained(checkpoint, fast_path=path == "fast")
    with torch.no_grad():
        if where == "logits":
            runtime.network.vlm.lm_head.weight[5, 0] = float("nan")
        else:
            runtime.network.action_out_proj.bias[0] = float("nan")
    with pytest.raises(ModelRuntimeError, match="non-finite values in the .*"
                       + ("logits" if where == "logits" else "velocities")):
        runtime.predict(_model_input(), InferenceOptions(max_coc_tokens=6,
                                                         diffusion_steps=2, seed=1))


def test_the_static_steps_own_their_attention(runtime):
    """The static steps run on attention twins (same weight tensors, their own config):
    the network's own language model and expert keep the attention they were loaded with,
    before and after a call."""
    from alpamayo_ros.model.static_cache import GROUPED_SDPA

    net, engine = runtime.network, runtime.engine
    runtime.predict(_model_input(), InferenceOptions(max_coc_tokens=3, diffusion_steps=2))
    pairs = ((net.vlm.model.language_model, engine.step_language_model),
             (net.expert, engine.step_expert))
    for model, twin in pairs:
        assert model.config._attn_implementation == "sdpa"
        assert twin.config._attn_implementation == GROUPED_SDPA
        assert twin.layers[0].self_attn.config is twin.config
        for (name, mine), theirs in zip(twin.named_parameters(), model.parameters()):
            assert mine.data_ptr() == theirs.data_ptr(), name
    assert net.vlm.config.vision_config._attn_implementation == "sdpa"


def test_predict_defaults_to_the_fast_path_and_is_reproducible(runtime):
    assert runtime.fast_path and runtime.describe()["fast_path"]
    options = InferenceOptions(num_samples=3, max_coc_tokens=24, diffusion_steps=4, seed=5)
    first = runtime.predict(_model_input(), options)
    second = runtime.predict(_model_input(), options)
    other = runtime.predict(_model_input(), InferenceOptions(
        num_samples=3, max_coc_tokens=24, diffusion_steps=4, seed=6))
    for a, b in zip(first.samples, second.samples):
        np.testing.assert_array_equal(a.xyz, b.xyz)
        assert a.coc == b.coc and a.coc_token_count == b.coc_token_count
    assert not np.array_equal(first.samples[0].xyz, other.samples[0].xyz)


# ------------------------------------------------------------------ shapes and reuse
def test_cache_is_reused_grown_and_bounded(checkpoint, caplog):
    runtime = AlpamayoRuntime.from_pretrained(
        checkpoint, fast_path_config=FastPathConfig(max_row_counts=2))
    engine = runtime.engine
    caplog.set_level(logging.INFO, logger="alpamayo_ros.model")
    small = InferenceOptions(num_samples=1, max_coc_tokens=8, diffusion_steps=2)
    runtime.predict(_model_input(), small)
    state = engine._states[1]
    runtime.predict(_model_input(speed=3.0), small)
    assert engine._states[1] is state  # same cache, same steps
    runtime.predict(_model_input(), InferenceOptions(num_samples=1, max_coc_tokens=64,
                                                     diffusion_steps=2))
    grown = engine._states[1]
    assert grown is not state and grown.capacity > state.capacity
    assert grown.capacity % static_cache.CAPACITY_ALIGN == 0
    runtime.predict(_model_input(), small)  # a smaller budget fits in the grown cache
    assert engine._states[1] is grown
    runtime.predict(_model_input(frames=_frames(96, 64)), small)  # other image size
    for rows in (2, 3):
        runtime.predict(_model_input(), InferenceOptions(num_samples=rows, max_coc_tokens=8,
                                                         diffusion_steps=2))
    assert list(engine._states) == [2, 3]  # at most max_row_counts row counts kept
    messages = runtime.fast_path_report()["messages"]
    assert sum("grows from" in m for m in messages) == 1
    assert sum("dropping the cache of 1 row(s)" in m for m in messages) == 1
    assert len(messages) == len(set(messages))
    logged = [r.getMessage() for r in caplog.records]
    assert sum("grows from" in m for m in logged) == 1


def _video_tick(start):
    """A 10 Hz tick: camera c holds frames start .. start + 3 of a "video" (tinted per
    camera), keyed (camera, frame index)."""
    video = [_frames(phase=p)[0] for p in range(8)]
    frames = [np.roll(video[start + f], shift=7 * c, axis=1) for c in range(4) for f in range(4)]
    keys = tuple((c, start + f) for c in range(4) for f in range(4))
    return frames, keys


def test_vision_features_are_reused_across_ticks(runtime):
    """A 10 Hz tick sequence: each camera's window shifts by one frame, so 4 of 16 frames
    are new. Only those are encoded, and the plans equal those of a run without reuse."""
    options = InferenceOptions(num_samples=2, max_coc_tokens=10, diffusion_steps=3, seed=4)
    engine = runtime.engine
    runtime.clear_vision_cache()
    for start in range(3):
        frames, keys = _video_tick(start)
        before = dict(engine.vision_stats)
        reused = runtime.predict(_model_input(frames, keys=keys), options)
        encoded = engine.vision_stats["encoded"] - before["encoded"]
        assert encoded == (16 if start == 0 else 4)
        assert engine.vision_stats["reused"] - before["reused"] == 16 - encoded
        fresh = runtime.predict(_model_input(frames), options)  # no keys: no reuse
        for a, b in zip(reused.samples, fresh.samples):
            np.testing.assert_allclose(a.xyz, b.xyz, atol=1e-5, rtol=0)
            assert a.coc == b.coc
    assert engine.report()["vision"]["cached_frames"] == 16
    runtime.clear_vision_cache()
    assert engine.report()["vision"]["cached_frames"] == 0


def _warm_and_cold_prefill_logits(runtime):
    """Prefill logits of tick 1 with 12 frames' features from tick 0 (warm) and with every
    frame encoded afresh (cold)."""
    engine = runtime.engine
    out = []
    with torch.inference_mode():
        runtime.clear_vision_cache()
        for start, keyed in ((0, True), (1, True), (1, False)):
            frames, keys = _video_tick(start)
            prepared = runtime.prepare_inputs(_model_input(frames, keys=keys),
                                              keys if keyed else None)
            features = engine.frame_features(prepared.pixel_values, prepared.image_grid_thw,
                                              prepared.encoded(), prepared.frame_keys)
            state = engine.state_for(1, prepared.input_ids.shape[1], 2)
            logits, _ = engine.prefill(state, prepared.input_ids, prepared.image_grid_thw,
                                       features, prepared.rope)
            out.append((len(prepared.encoded()), logits.float().cpu()))
    (_, _), (warm_encoded, warm), (cold_encoded, cold) = out
    assert (warm_encoded, cold_encoded) == (4, 16)
    return warm, cold


def test_warm_and_cold_prefill_logits_agree(runtime):
    warm, cold = _warm_and_cold_prefill_logits(runtime)
    torch.testing.assert_close(warm, cold, atol=1e-5, rtol=0)


def test_repeated_keys_are_encoded_once_and_bad_keys_refused(runtime):
    frames = _frames()
    keys = tuple(("cam", k // 2) for k in range(16))  # each frame listed twice
    frames = [frames[2 * (k // 2)] for k in range(16)]
    runtime.clear_vision_cache()
    before = runtime.engine.vision_stats["encoded"]
    runtime.predict(_model_input(frames, keys=keys),
                    InferenceOptions(max_coc_tokens=4, diffusion_steps=2))
    assert runtime.engine.vision_stats["encoded"] - before == 8
    with pytest.raises(ModelInputError, match="frame_keys must name all 16 frames, have 3"):
        runtime.predict(_model_input(keys=(1, 2, 3)), InferenceOptions(max_coc_tokens=4))
    with pytest.raises(ModelInputError, match="frame_keys must be hashable"):
        runtime.predict(_model_input(keys=tuple([k] for k in range(16))),
                        InferenceOptions(max_coc_tokens=4))


def test_prompt_rope_ids_are_kept_per_grid_and_equal_a_fresh_computation(runtime):
    """The fast path takes the prompt's M-RoPE ids from the runtime's per-grid prompt cache;
    they must equal get_rope_index of the fused prompt whatever the history tokens."""
    with torch.inference_mode():
        for frames, speed in ((_frames(), 6.0), (_frames(), 1.0), (_frames(96, 64), 6.0)):
            prepared = runtime.prepare_inputs(_model_input(frames, speed=speed))
            position_ids, deltas = runtime.network.vlm.model.get_rope_index(
                prepared.input_ids, prepared.image_grid_thw, None)
            assert torch.equal(prepared.rope[0], position_ids)
            assert torch.equal(prepared.rope[1], deltas)


def test_eager_path_refuses_partial_frames(runtime):
    runtime.clear_vision_cache()
    keys = tuple(range(16))
    runtime.predict(_model_input(keys=keys), InferenceOptions(max_coc_tokens=2,
                                                               diffusion_steps=1))
    with torch.inference_mode():
        prepared = runtime.prepare_inputs(_model_input(), frame_keys=keys)
        assert prepared.encoded_frames == () and prepared.pixel_values.shape[0] == 0
        with pytest.raises(ModelRuntimeError, match="eager path needs the patches"):
            runtime.run_prepared(prepared, InferenceOptions(max_coc_tokens=2), path="eager")


def test_warmup_prepares_the_row_state(checkpoint):
    runtime = AlpamayoRuntime.from_pretrained(checkpoint)
    keys = tuple(range(16))
    runtime.predict(_model_input(keys=keys), InferenceOptions(max_coc_tokens=2,
                                                               diffusion_steps=1))
    seconds = runtime.warmup(InferenceOptions(num_samples=2, max_coc_tokens=16), (64, 96))
    assert seconds > 0.0
    state = runtime.engine._states[2]
    messages = len(runtime.fast_path_report()["messages"])
    assert runtime.engine.missing_frames(tuple((k, 64, 96) for k in keys)) == []
    runtime.predict(_model_input(), InferenceOptions(num_samples=2, max_coc_tokens=16))
    assert runtime.engine._states[2] is state  # the real call found everything ready
    assert len(runtime.fast_path_report()["messages"]) == messages
    eager = AlpamayoRuntime.from_pretrained(checkpoint, fast_path=False)
    assert eager.warmup(InferenceOptions(max_coc_tokens=4), (64, 96)) > 0.0
    assert "fast" not in eager._engines


def test_warmup_self_check_passes_and_keeps_the_fast_path(checkpoint, caplog):
    runtime = AlpamayoRuntime.from_pretrained(checkpoint)
    caplog.set_level(logging.INFO, logger="alpamayo_ros.model")
    runtime.warmup(InferenceOptions(num_samples=2, max_coc_tokens=8), (64, 96))
    assert runtime.fast_path and runtime.inference_path() == InferencePath("fast", "")
    assert any("self-check passed" in r.getMessage() for r in caplog.records)
    with torch.inference_mode():
        check = runtime.self_check(runtime.prepare_inputs(_model_input()),
                                   InferenceOptions(num_samples=2, max_coc_tokens=8))
    assert check.same_decode and check.velocity_max > 0.0
    assert check.velocity_max_diff <= runtime.self_check_atol()


def _assert_fell_back(runtime, caplog, why):
    path = runtime.inference_path()
    assert not runtime.fast_path and path.name == "eager"
    assert "fast path switched off at warm-up" in path.problem and why in path.problem
    assert "fast" not in runtime._engines  # its caches and graphs are released
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any(why in m for m in errors)
    output = runtime.predict(_model_input(), InferenceOptions(max_coc_tokens=4,
                                                              diffusion_steps=2, seed=0))
    assert len(output.samples) == 1 and np.isfinite(output.samples[0].xyz).all()


def test_a_capture_failure_at_warmup_falls_back_to_the_eager_path(checkpoint, monkeypatch,
                                                                  caplog):
    """Injected: the CUDA graph capture raises (CPU stands in with graphs forced on)."""
    def broken(self):
        raise RuntimeError("CUDA error: operation not permitted when stream is capturing")

    runtime = AlpamayoRuntime.from_pretrained(checkpoint)
    runtime.engine.use_graphs = True
    monkeypatch.setattr(StepRunner, "_record", broken)
    caplog.set_level(logging.INFO, logger="alpamayo_ros.model")
    runtime.warmup(InferenceOptions(max_coc_tokens=8), (64, 96))
    _assert_fell_back(runtime, caplog, "CUDA graph capture failed")
    assert "operation not permitted when stream is capturing" in runtime.inference_path().problem


def test_a_fast_path_mismatch_at_warmup_falls_back_to_the_eager_path(checkpoint, monkeypatch,
                                                                     caplog):
    """Injected: each fast Euler step adds 0.01 to x (a velocity error of 0.01 / dt)."""
    step = FastEngine._flow_step

    def skewed(self, state, times, dt):
        step(self, state, times, dt)
        state.x += 0.01

    monkeypatch.setattr(FastEngine, "_flow_step", skewed)
    runtime = AlpamayoRuntime.from_pretrained(checkpoint)
    caplog.set_level(logging.INFO, logger="alpamayo_ros.model")
    runtime.warmup(InferenceOptions(max_coc_tokens=8), (64, 96))
    _assert_fell_back(runtime, caplog, "first Euler step differs from the eager path's by 0.01")


def test_a_fast_path_error_at_warmup_falls_back_to_the_eager_path(checkpoint, monkeypatch,
                                                                  caplog):
    def broken(self, *args):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(FastEngine, "prefill", broken)
    runtime = AlpamayoRuntime.from_pretrained(checkpoint)
    caplog.set_level(logging.INFO, logger="alpamayo_ros.model")
    runtime.warmup(InferenceOptions(max_coc_tokens=8), (64, 96))
    _assert_fell_back(runtime, caplog, "illegal memory access")


def test_backend_parameter_turns_the_fast_path_off(runtime):
    from alpamayo_ros.core.planner_params import validate_parameters
    from alpamayo_ros.model.backends import load_model

    values = validate_parameters({
        "model.backend": "alpamayo", "model.checkpoint_dir": runtime.describe()["checkpoint"],
        "model.device": "cpu", "model.dtype": "float32"})
    model, _ = load_model(values, InferenceOptions())
    assert model.fast_path  # default on
    model, _ = load_model(dict(values, **{"model.fast_path": False}), InferenceOptions())
    assert not model.fast_path and not model.describe()["fast_path"]


def test_unknown_path_is_refused(runtime):
    with torch.inference_mode():
        prepared = runtime.prepare_inputs(_model_input())
    from alpamayo_ros.core.errors import ConfigError
    with pytest.raises(ConfigError, match="path must be one of"):
        runtime.run_prepared(prepared, InferenceOptions(), path="compiled")


# ------------------------------------------------------------------ building blocks
def _reference_sdpa(query, key, value, mask):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    class Module(torch.nn.Module):
        num_key_value_groups = query.shape[1] // key.shape[1]
        is_causal = True

    return sdpa_attention_forward(Module(), query, key, value, mask, scaling=0.25)[0]


@pytest.mark.parametrize("q_len,mask_rows,groups", [(1, 1, 4), (8, 1, 2), (8, 8, 2)])
def test_grouped_query_sdpa_equals_transformers_sdpa(q_len, mask_rows, groups):
    gen = torch.Generator().manual_seed(0)
    batch, kv_heads, kv_len, dim = 3, 2, 48, 16
    query = torch.randn(batch, kv_heads * groups, q_len, dim, generator=gen)
    key = torch.randn(batch, kv_heads, kv_len, dim, generator=gen)
    value = torch.randn(batch, kv_heads, kv_len, dim, generator=gen)
    hidden = torch.rand(batch, 1, mask_rows, kv_len, generator=gen) < 0.4
    hidden[..., 0] = False  # every query sees at least one key
    mask = torch.zeros(hidden.shape).masked_fill(hidden, torch.finfo(torch.float32).min)
    want = _reference_sdpa(query, key, value, mask.expand(batch, 1, q_len, kv_len))
    have, _ = static_cache.grouped_query_sdpa(None, query, key, value, mask, scaling=0.25)
    torch.testing.assert_close(have, want, atol=1e-6, rtol=1e-5)


def test_static_cache_prefill_view_and_static_writes():
    cache = static_cache.StaticKVCache(num_layers=1, rows=3, capacity=16, kv_heads=2,
                                       head_dim=4, dtype=torch.float32, device=torch.device("cpu"))
    assert bool((cache.layers[0].keys == 0).all())  # zeroed: masked slots stay finite
    prefill = cache.prefill_writes()
    prompt = torch.randn(1, 2, 5, 4)
    keys, _ = prefill.update(prompt, prompt, 0, {"cache_position": torch.arange(5)})
    assert keys.shape == (1, 2, 5, 4) and prefill.get_seq_length() == 5
    torch.testing.assert_close(cache.layers[0].keys[:, :, :5], prompt.expand(3, -1, -1, -1))
    step = torch.randn(3, 2, 1, 4)
    keys, values = cache.update(step, step, 0, {"cache_position": torch.tensor([9])})
    assert keys.shape == (3, 2, 16, 4) and keys.data_ptr() == cache.layers[0].keys.data_ptr()
    torch.testing.assert_close(keys[:, :, 9:10], step)
    assert bool((keys[:, :, 5:9] == 0).all())
    assert cache.prefill_writes().get_seq_length() == 0  # a new prompt starts at slot 0
    with pytest.raises(ModelRuntimeError, match="multiple of 16"):
        static_cache.StaticKVCache(1, 1, 20, 2, 4, torch.float32, torch.device("cpu"))
    with pytest.raises(ModelRuntimeError, match="room for 16 tokens, need 21"):
        prefill.update(torch.randn(1, 2, 16, 4), torch.randn(1, 2, 16, 4), 0, {})


def _warped_reference(logits, banned, temperature, top_p):
    """The official distribution: ban, transformers' warpers, softmax."""
    from transformers import TemperatureLogitsWarper, TopPLogitsWarper

    scores = logits.clone()
    scores[:, banned[0]:banned[1]] = float("-inf")
    scores = TopPLogitsWarper(top_p)(None, TemperatureLogitsWarper(temperature)(None, scores))
    return torch.softmax(scores, dim=-1)


def test_sampler_keeps_the_official_distribution():
    """Chi-square test of 40,000 exponential-race draws against the official distribution
    (ban, temperature 0.6, top-p 0.98) of a 12-token vocabulary; banned and top-p-removed
    tokens never appear."""
    from scipy.stats import chisquare

    logits = torch.tensor([[2.0, 1.5, 1.2, 0.3, 0.0, -0.5, 5.0, 4.0, -1.0, -3.0, -4.0, 0.9]])
    banned = (6, 8)  # the two most likely ids play the <iN> tokens
    probs = _warped_reference(logits, banned, 0.6, 0.98)[0]
    assert bool((probs[6:8] == 0).all()) and int((probs == 0).sum()) >= 4  # top-p cut some
    chooser = TokenChooser(*banned, sample=True, temperature=0.6, top_p=0.98)
    draws = 40_000
    tokens = chooser(logits.expand(draws, -1).clone(), torch.Generator().manual_seed(1))
    counts = torch.bincount(tokens, minlength=logits.shape[1]).double()
    support = probs > 0
    assert bool((counts[~support] == 0).all())
    expected = probs[support].double()
    result = chisquare(counts[support].numpy(), (expected / expected.sum() * draws).numpy())
    assert result.pvalue > 1e-3, (counts, probs * draws)


def test_sampler_filters_exactly_like_the_reference_and_draws_like_multinomial():
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(6, 500, generator=gen) * 3
    chooser = TokenChooser(100, 180, sample=True)
    scores = chooser.filtered_scores(logits.clone())
    reference = _warped_reference(logits, (100, 180), 0.6, 0.98)
    torch.testing.assert_close(torch.softmax(scores, -1), reference, atol=0, rtol=0)
    # torch.multinomial draws one sample with the same exponential race (after a
    # validity check that syncs on CUDA): same generator state, same tokens.
    race = exponential_race(reference, torch.Generator().manual_seed(9))
    multinomial = torch.multinomial(reference, 1, generator=torch.Generator().manual_seed(9))
    assert torch.equal(race, multinomial[:, 0])
    greedy = TokenChooser(100, 180, sample=False)(logits.clone())
    banned = logits.clone()
    banned[:, 100:180] = float("-inf")
    assert torch.equal(greedy, banned.argmax(-1))


def test_exponential_race_never_picks_zero_probability_tokens():
    probs = torch.zeros(2000, 5)
    probs[:, 3] = 1.0
    assert bool((exponential_race(probs, torch.Generator().manual_seed(0)) == 3).all())


def test_step_runner_keeps_the_capture_failure_and_runs_uncaptured(monkeypatch, caplog):
    """A failed capture is tried once, logged once as an error, kept with its reason, and
    the step still runs (without a graph)."""
    log = OnceLog()
    calls, tries = [], []

    def broken(self):
        tries.append(1)
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(StepRunner, "_record", broken)
    runner = StepRunner(lambda: calls.append(1), "a test step", torch.device("cuda"), log=log)
    caplog.set_level(logging.INFO, logger="alpamayo_ros.model")
    assert runner.capture() is False and runner.capture() is False
    runner()
    assert calls == [1] and tries == [1] and not runner.captured
    assert runner.failure == "RuntimeError: operation not permitted when stream is capturing"
    assert len(log.messages) == 1 and "capture of a test step failed" in log.messages[0]
    assert [r.levelno for r in caplog.records] == [logging.ERROR]


def test_once_log_reports_each_event_once(caplog):
    seen = []
    log = OnceLog(sink=lambda level, message: seen.append((level, message)))
    caplog.set_level(logging.INFO, logger="alpamayo_ros.model")
    assert log.once("a", "first") and not log.once("a", "again")
    assert log.once("b", "second", logging.WARNING)
    assert seen == [(logging.INFO, "first"), (logging.WARNING, "second")]
    assert [r.getMessage() for r in caplog.records] == ["first", "second"]


def test_config_is_checked():
    with pytest.raises(ModelRuntimeError, match="stop_check_interval must be >= 1, have 0"):
        FastPathConfig(stop_check_interval=0)
    with pytest.raises(ModelRuntimeError, match="max_row_counts must be >= 1"):
        FastPathConfig(max_row_counts=0)


# ------------------------------------------------------------------ Alpamayo 1.5
NAV_TEXT = "Turn left in 40m"
RIG = (0, 1, 2, 6)


@pytest.fixture(scope="module")
def checkpoint_1_5(tmp_path_factory):
    from alpamayo_ros.model.tiny_checkpoint import write_tiny_checkpoint

    torch.set_num_threads(1)
    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny15"), seed=0, family="1.5")


@pytest.fixture(scope="module")
def runtime_1_5(checkpoint_1_5):
    return AlpamayoRuntime.from_pretrained(checkpoint_1_5)


def _input_1_5(nav_text=None, cameras=RIG, frames=None, keys=None):
    return dataclasses.replace(_model_input(frames, keys=keys), camera_indices=cameras,
                               navigation_text=nav_text)


# (camera names, instruction, guidance weight): 1.5 plain, with an instruction, with
# guidance (the notebook's weight, an interpolating one and a strongly extrapolating one).
CASES_1_5 = [(None, None, 1.5), (RIG, None, 1.5), (RIG, NAV_TEXT, 0.0), (RIG, NAV_TEXT, 1.5),
             (RIG, NAV_TEXT, 0.5), (RIG, NAV_TEXT, 3.0)]


@pytest.mark.parametrize("cameras,nav_text,weight", CASES_1_5)
def test_1_5_calls_match_the_eager_path(runtime_1_5, cameras, nav_text, weight):
    """Sampled CoCs (rows stopping at different steps) and a forced stop, 1 and 3 rows:
    same tokens, stops and offsets, actions within the R1 tests' tolerance."""
    ids = runtime_1_5.token_ids
    model_input = _input_1_5(nav_text, cameras)
    forced = torch.tensor([300, ids.cot_end, ids.traj_future_start, 302])
    for rows, seed, force, budget in ((1, 0, None, 30), (3, 7, None, 30), (2, 1, forced, 30),
                                      (2, 3, None, 1)):  # budget 1: no CoC token fed
        options = InferenceOptions(num_samples=rows, max_coc_tokens=budget, diffusion_steps=4,
                                   seed=seed, nav_guidance_scale=weight)
        eager, fast = _both_paths(runtime_1_5, options, forced=force, model_input=model_input)
        assert fast.path == "fast" and eager.path == "eager"
        _assert_same(eager, fast)
    if nav_text is not None and weight != 0:  # the guided row state served the call
        assert FastEngine.state_key(2, True) in runtime_1_5.engine._states


def test_guidance_runs_one_expert_batch_of_guided_and_unguided_rows(runtime_1_5,
                                                                    monkeypatch):
    """Each Euler step of a guided call is one expert call over 2N rows; without guidance
    (or without an instruction) N rows."""
    engine = runtime_1_5.engine
    batches = []
    expert = engine.step_expert

    def counting(*args, **kwargs):
        batches.append(int(kwargs["inputs_embeds"].shape[0]))
        return expert(*args, **kwargs)

    monkeypatch.setattr(engine, "step_expert", counting)
    for nav_text, weight, rows_per_step in ((NAV_TEXT, 1.5, 6), (NAV_TEXT, 0.0, 3),
                                            (None, 1.5, 3)):
        batches.clear()
        options = InferenceOptions(num_samples=3, max_coc_tokens=6, diffusion_steps=5, seed=2,
                                   nav_guidance_scale=weight)
        with torch.inference_mode():
            raw = runtime_1_5.run_prepared(runtime_1_5.prepare_inputs(_input_1_5(nav_text)),
                                           options, path="fast")
        assert raw.path == "fast"
        assert batches == [rows_per_step] * 5, (nav_text, weight)


def test_unguided_rows_hold_the_eager_unguided_context(runtime_1_5):
    """The guided state's unguided rows (filled from the route span on, the prefix shared
    with the guided prompt) equal nav_guidance.unguided_context's cache over its length,
    and the unguided prompt has the guided prompt's rope delta."""
    from alpamayo_ros.model import nav_guidance

    ids = runtime_1_5.token_ids
    forced = torch.tensor([300, 301, ids.cot_end, ids.traj_future_start])
    options = InferenceOptions(num_samples=2, max_coc_tokens=12, diffusion_steps=2, seed=0,
                               nav_guidance_scale=1.5)
    net = runtime_1_5.network
    with torch.inference_mode():
        prepared = runtime_1_5.prepare_inputs(_input_1_5(NAV_TEXT))
        raw = runtime_1_5.run_prepared(prepared, options, forced_tokens=forced, path="fast")
        prompt_len = prepared.input_ids.shape[1]
        fed = raw.tokens[:, :raw.cache_len - prompt_len]
        eager = nav_guidance.unguided_context(
            net, prepared.unguided_input_ids, prepared.pixel_values, prepared.image_grid_thw,
            fed, raw.offsets, prepared.route_len, NUM_WAYPOINTS)
        _, guided_delta = net.vlm.model.get_rope_index(prepared.input_ids,
                                                       prepared.image_grid_thw, None)
    assert eager.rope_deltas == int(guided_delta) == raw.rope_deltas
    assert prepared.input_ids[0, prepared.route_start] == ids.route_start
    state = runtime_1_5.engine._states[FastEngine.state_key(2, True)]
    length = eager.cache_len
    assert length == raw.cache_len - prepared.route_len
    for have, want in zip(state.unguided_cache.layers, eager.cache.layers):
        keys, values = want.cached()
        torch.testing.assert_close(have.keys[:, :, :length], keys, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(have.values[:, :, :length], values, atol=1e-5, rtol=1e-5)


def test_guidance_weight_one_gives_the_plain_instruction_call(runtime_1_5):
    """w = 1: (1 - w) v_unguided vanishes, so the guided state's plan is the instruction
    call's without guidance (a separate row state)."""
    noise = np.random.default_rng(3).standard_normal((2, NUM_WAYPOINTS, 2)).astype(np.float32)
    with torch.inference_mode():
        prepared = runtime_1_5.prepare_inputs(_input_1_5(NAV_TEXT))
        plans = [runtime_1_5.run_prepared(
            prepared, InferenceOptions(num_samples=2, max_coc_tokens=10, diffusion_steps=3,
                                       seed=4, nav_guidance_scale=weight), noise, path="fast")
            for weight in (1.0, 0.0)]
    _assert_same(plans[1], plans[0], actions_atol=1e-6)


def test_guided_and_plain_states_are_kept_apart_and_reused(checkpoint_1_5):
    """A guided call and a plain call of the same row count each get their own state; later
    calls (another weight included: it is a device tensor) reuse them."""
    runtime = AlpamayoRuntime.from_pretrained(checkpoint_1_5)
    with torch.inference_mode():
        prepared = runtime.prepare_inputs(_input_1_5(NAV_TEXT))
        for weight in (1.5, 0.0, 2.5, 0.0):
            runtime.run_prepared(prepared, InferenceOptions(
                num_samples=2, max_coc_tokens=8, diffusion_steps=2, seed=0,
                nav_guidance_scale=weight), path="fast")
    states = runtime.fast_path_report()["states"]
    assert [(s["rows"], s["guided"]) for s in states] == [(2, True), (2, False)]
    guided = runtime.engine._states[FastEngine.state_key(2, True)]
    assert guided.full_cache.rows == 4 and guided.cache.rows == 2
    assert guided.cache.layers[0].keys.data_ptr() == guided.full_cache.layers[0].keys.data_ptr()
    assert sum("KV cache for 2 row(s)" in m for m in runtime.fast_path_report()["messages"]) == 2


def test_guided_ticks_reuse_vision_features_and_match_the_eager_path(runtime_1_5):
    """Guided 10 Hz ticks with frame keys: 4 new frames encoded per tick (the unguided
    context needs no images of its own), plans equal to the eager path's on all frames."""
    options = InferenceOptions(num_samples=2, max_coc_tokens=10, diffusion_steps=3, seed=4,
                               nav_guidance_scale=1.5)
    engine = runtime_1_5.engine
    runtime_1_5.clear_vision_cache()
    for start in range(2):
        frames, keys = _video_tick(start)
        before = engine.vision_stats["encoded"]
        with torch.inference_mode():
            warm = runtime_1_5.prepare_inputs(_input_1_5(NAV_TEXT, frames=frames), keys)
            fast = runtime_1_5.run_prepared(warm, options, path="fast")
            eager = runtime_1_5.run_prepared(
                runtime_1_5.prepare_inputs(_input_1_5(NAV_TEXT, frames=frames)), options,
                path="eager")
        assert engine.vision_stats["encoded"] - before == (16 if start == 0 else 4)
        _assert_same(eager, fast)
    runtime_1_5.clear_vision_cache()


def test_guided_call_needs_the_route_position(runtime_1_5):
    with torch.inference_mode():
        prepared = dataclasses.replace(runtime_1_5.prepare_inputs(_input_1_5(NAV_TEXT)),
                                       route_start=-1)
        with pytest.raises(ModelRuntimeError, match="route_start"):
            runtime_1_5.run_prepared(prepared, InferenceOptions(max_coc_tokens=4,
                                                                nav_guidance_scale=1.5),
                                     path="fast")


def test_1_5_warmup_self_checks_the_guided_call(checkpoint_1_5, caplog):
    """With guidance on, the warm-up also runs and checks a call with an instruction (the
    guided row state); with guidance off only the plain call."""
    from alpamayo_ros.model.runtime import WARMUP_NAV_TEXT

    runtime = AlpamayoRuntime.from_pretrained(checkpoint_1_5)
    caplog.set_level(logging.INFO, logger="alpamayo_ros.model")
    options = InferenceOptions(num_samples=2, max_coc_tokens=8, nav_guidance_scale=1.5)
    runtime.warmup(options, (64, 96), camera_indices=RIG)
    assert runtime.inference_path() == InferencePath("fast", "")
    assert sum("self-check passed" in r.getMessage() for r in caplog.records) == 2
    assert set(runtime.engine._states) == {2, FastEngine.state_key(2, True)}
    with torch.inference_mode():
        check = runtime.self_check(runtime.prepare_inputs(_input_1_5(WARMUP_NAV_TEXT)), options)
    assert check.same_decode and check.velocity_max > 0.0
    assert check.velocity_max_diff <= runtime.self_check_atol()
    plain = AlpamayoRuntime.from_pretrained(checkpoint_1_5)
    plain.warmup(dataclasses.replace(options, nav_guidance_scale=0.0), (64, 96),
                 camera_indices=RIG)
    assert set(plain.engine._states) == {2}


def test_a_guided_fast_path_mismatch_at_warmup_falls_back(checkpoint_1_5, monkeypatch,
                                                         caplog):
    """Injected: the unguided rows are left with the guided prompt; only the guided
    warm-up call can see it, and the runtime falls back to the eager path, saying so."""
    monkeypatch.setattr(FastEngine, "unguided_feed", lambda self, *args: None)
    runtime = AlpamayoRuntime.from_pretrained(checkpoint_1_5)
    caplog.set_level(logging.INFO, logger="alpamayo_ros.model")
    runtime.warmup(InferenceOptions(max_coc_tokens=8, nav_guidance_scale=1.5), (64, 96),
                   camera_indices=RIG)
    path = runtime.inference_path()
    assert not runtime.fast_path and path.name == "eager"
    assert "first Euler step differs" in path.problem
    assert "(navigation guidance)" in path.problem
    output = runtime.predict(_input_1_5(NAV_TEXT), InferenceOptions(
        max_coc_tokens=4, diffusion_steps=2, seed=0, nav_guidance_scale=1.5))
    assert np.isfinite(output.samples[0].xyz).all()


# ------------------------------------------------------------------ CUDA only
cuda_only = pytest.mark.skipif(not CUDA, reason="needs CUDA")


@pytest.fixture(scope="module")
def cuda_runtime(checkpoint):
    if not CUDA:
        pytest.skip("needs CUDA")
    return AlpamayoRuntime.from_pretrained(checkpoint, device="cuda", dtype=torch.float32)


@cuda_only
def test_cuda_graph_replays_match_the_eager_path(cuda_runtime):
    ids = cuda_runtime.token_ids
    forced = torch.tensor([300, 301, ids.cot_end, ids.traj_future_start, 302])
    noise = np.random.default_rng(1).standard_normal((2, NUM_WAYPOINTS, 2)).astype(np.float32)
    options = InferenceOptions(num_samples=2, max_coc_tokens=20, diffusion_steps=4)
    eager, fast = _both_paths(cuda_runtime, options, noise, forced)
    report = cuda_runtime.fast_path_report()
    assert report["cuda_graphs"] and report["states"][0]["captured"]
    assert not report["states"][0]["uncaptured"]
    _assert_same(eager, fast, actions_atol=1e-4)
    greedy = InferenceOptions(num_samples=2, max_coc_tokens=9, diffusion_steps=4,
                              sample_coc=False)
    eager, fast = _both_paths(cuda_runtime, greedy, noise)
    _assert_same(eager, fast, actions_atol=1e-4)


@cuda_only
def test_cuda_graph_sampling_is_reproducible(cuda_runtime):
    options = InferenceOptions(num_samples=3, max_coc_tokens=30, diffusion_steps=4, seed=8)
    first = cuda_runtime.predict(_model_input(), options)
    second = cuda_runtime.predict(_model_input(), options)
    for a, b in zip(first.samples, second.samples):
        np.testing.assert_array_equal(a.xyz, b.xyz)
        assert a.coc == b.coc


@cuda_only
def test_warm_and_cold_prefill_logits_agree_on_cuda(cuda_runtime):
    """Vision reuse on the GPU: features encoded in another batch (4 new frames) give the
    prefill logits of encoding all 16 at once, up to the convolution's TF32 rounding."""
    warm, cold = _warm_and_cold_prefill_logits(cuda_runtime)
    torch.testing.assert_close(warm, cold, atol=1e-3, rtol=1e-3)


@cuda_only
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_warmup_self_check_passes_on_cuda(checkpoint, dtype):
    """Captured steps against the eager path at warm-up: the fast path stays, in float32
    and in bf16 (where the paths' attention kernels round differently)."""
    runtime = AlpamayoRuntime.from_pretrained(checkpoint, device="cuda", dtype=dtype)
    runtime.warmup(InferenceOptions(num_samples=2, max_coc_tokens=8), (64, 96))
    assert runtime.inference_path() == InferencePath("fast", "")
    assert runtime.fast_path_report()["capture_failures"] == []


@cuda_only
def test_decode_and_euler_steps_do_not_synchronise_on_cuda(cuda_runtime):
    """One decode step and one Euler step, uncaptured and replayed, under
    torch.cuda.set_sync_debug_mode("error"): any host sync inside would raise."""
    runtime = cuda_runtime
    options = InferenceOptions(num_samples=2, max_coc_tokens=8, diffusion_steps=4)
    runtime.predict(_model_input(), options)  # allocates, captures, fills the cache
    engine = runtime.engine
    state = engine._states[2]
    chooser = engine.chooser(Request(rows=2, max_new_tokens=8, diffusion_steps=4))
    decode = engine.decode_runner(state, chooser)
    flow = engine.flow_runner(state, 4)
    assert decode.captured and flow.captured
    with torch.inference_mode():  # the state's tensors are inference tensors
        state.reset_indices()
        state.position.fill_(3)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        with torch.inference_mode():
            decode.step()
            flow.step()
            decode()
            flow()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
    assert int(state.step) == 1 and int(state.flow_step) == 2


@cuda_only
def test_cuda_graph_replays_with_navigation_guidance_match_the_eager_path(checkpoint_1_5):
    """1.5 with guidance on CUDA: the guided decode and the 2N-row Euler step captured,
    replays against the eager path (float32)."""
    runtime = AlpamayoRuntime.from_pretrained(checkpoint_1_5, device="cuda",
                                              dtype=torch.float32)
    ids = runtime.token_ids
    forced = torch.tensor([300, 301, ids.cot_end, ids.traj_future_start, 302])
    noise = np.random.default_rng(1).standard_normal((2, NUM_WAYPOINTS, 2)).astype(np.float32)
    for weight in (1.5, 0.0):
        options = InferenceOptions(num_samples=2, max_coc_tokens=20, diffusion_steps=4,
                                   nav_guidance_scale=weight)
        eager, fast = _both_paths(runtime, options, noise, forced,
                                  model_input=_input_1_5(NAV_TEXT))
        _assert_same(eager, fast, actions_atol=1e-4)
    report = runtime.fast_path_report()
    assert report["cuda_graphs"] and report["capture_failures"] == []
    assert all(s["captured"] and not s["uncaptured"] for s in report["states"])
    assert {s["guided"] for s in report["states"]} == {True, False}


@cuda_only
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_guided_warmup_self_check_passes_on_cuda(checkpoint_1_5, dtype):
    runtime = AlpamayoRuntime.from_pretrained(checkpoint_1_5, device="cuda", dtype=dtype)
    runtime.warmup(InferenceOptions(num_samples=2, max_coc_tokens=8, nav_guidance_scale=1.5),
                   (64, 96), camera_indices=RIG)
    assert runtime.inference_path() == InferencePath("fast", "")
    assert runtime.fast_path_report()["capture_failures"] == []
