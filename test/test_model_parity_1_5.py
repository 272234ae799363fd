"""Parity with the official Alpamayo 1.5 code on its golden set (set C by default).

The set is $ALPAMAYO15_FIXTURE_DIR, else ../shared/fixtures/alpamayo1_5_tiny_c (see
fixture_set.SET_1_5); every expectation, dimension, camera list, text and tolerance comes
from its files (its README describes them), so another set recorded the same way passes
unchanged. Cases: the base prompt (no camera labels), ``cam_`` (camera names and frame
numbers), ``nav_`` (navigation text), ``camfew_`` / ``camall_`` (other camera counts),
``cfg_`` (classifier-free guidance), ``vqa_`` (question prompt) and ``prompt_only_cases``.
Tolerances are the README's suggestions for a float32 re-implementation.
"""
import hashlib
import re

import numpy as np
import pytest
import torch

from fixture_set import SET_1_5 as SET

from alpamayo_ros.core.types import FRAMES_PER_CAMERA, InferenceOptions, ModelInput
from alpamayo_ros.model import generation, nav_guidance
from alpamayo_ros.model.modeling import expert_velocity
from alpamayo_ros.model.prompt import PromptSpec, build_unfused_input_ids, render_prompt_text

pytestmark = [SET.requires, pytest.mark.fixtures]

VELOCITY_TOL = 1e-4    # per-step velocity given the recorded x
XYZ_TOL = 1e-3         # m
ROT_TOL = 1e-5
# Prefixes of the trajectory cases ("" is the base case, keys without a prefix).
TRAJECTORY_CASES = ("", "cam_", "nav_", "camfew_", "camall_")


@pytest.fixture(scope="module")
def runtime():
    from alpamayo_ros.model.runtime import AlpamayoRuntime

    torch.set_num_threads(1)
    processor_dir = SET.base_vlm_dir()  # skips when the set lacks it
    runtime = AlpamayoRuntime.from_pretrained(SET.require_fixture_dir() / "checkpoint")
    assert runtime.processor_dir == processor_dir.resolve()
    return runtime


def case_cameras(prefix: str):
    """Camera ids of a case (None: the base case, no labels; cfg_ runs on the nav_ input)."""
    if prefix == "":
        return None
    prefix = "nav_" if prefix == "cfg_" else prefix
    return tuple(int(i) for i in SET.load_expected()[f"{prefix}camera_indices"])


def case_frames(cameras) -> np.ndarray:
    """(4 C, H, W, 3) frames of a case: per camera its block of image_frames, else of
    image_frames_extra (README 'Frames of a camera subset')."""
    inputs = SET.load_inputs()
    if cameras is None:
        blocks = list(inputs["image_frames"])
    else:
        main = inputs["camera_indices"].tolist()
        extra = inputs["camera_indices_extra"].tolist()
        blocks = [inputs["image_frames"][main.index(k)] if k in main
                  else inputs["image_frames_extra"][extra.index(k)] for k in cameras]
    return torch.stack(blocks).flatten(0, 1).permute(0, 2, 3, 1).numpy()


def case_input(prefix: str) -> ModelInput:
    inputs, expected = SET.load_inputs(), SET.load_expected()
    cameras = case_cameras(prefix)
    nav_text = expected["nav_text"] if prefix in ("nav_", "cfg_") else None
    return ModelInput(frames=case_frames(cameras),
                      history_xyz=inputs["ego_history_xyz"][0, 0].double().numpy(),
                      history_rot=inputs["ego_history_rot"][0, 0].double().numpy(),
                      camera_indices=cameras, navigation_text=nav_text)


def _sha256(values: torch.Tensor) -> str:
    return hashlib.sha256(values.float().contiguous().numpy().astype("<f4").tobytes()).hexdigest()


def test_family_parameters_and_rebuilt_buffers(runtime):
    config, expected = SET.checkpoint_config(), SET.load_expected()
    assert runtime.family.model_type == config["model_type"]
    assert runtime.model_id.startswith(config["model_type"] + "-")
    assert runtime.describe()["family"] == config["model_type"]
    assert runtime.describe()["param_count"] == expected["param_count"]
    assert runtime.token_ids.vocab_size == expected["ids"]["vocab_size"]
    # The checkpoint holds no buffers: the network's are rebuilt from config.json.
    from safetensors import safe_open
    with safe_open(str(SET.require_file("checkpoint/model.safetensors")), "pt") as handle:
        stored = set(handle.keys())
    buffers = dict(runtime.network.named_buffers())
    assert len(stored) == expected["checkpoint"]["num_tensors"]
    for key in expected["checkpoint"]["keys_in_r1_set_a_not_here"]:
        assert key not in stored and key in buffers, key
    space = config["action_space_cfg"]
    for name in ("accel_mean", "accel_std", "curvature_mean", "curvature_std"):
        assert float(getattr(runtime.network.action_space, name)) == pytest.approx(space[name])
    proj = config["action_in_proj_cfg"]
    freqs = runtime.network.action_in_proj.timestep_fourier_encoder.freqs
    assert freqs.shape[-1] == proj["num_fourier_feats"] // 2
    assert float(freqs.max()) == pytest.approx(proj["max_freq"])


def test_special_token_ids_by_their_1_5_names(runtime):
    tokenizer, ids = runtime.tokenizer, runtime.token_ids
    facts = SET.load_expected()["ids"]
    special = facts["special_token_ids"]
    for name, want in special.items():
        assert tokenizer.convert_tokens_to_ids(f"<|{name}|>") == want, name
    assert (ids.route_start, ids.route_end, ids.answer_end) == (
        special["route_start"], special["route_end"], special["answer_end"])
    assert (ids.pad, ids.im_end, ids.hist_token_start) == (
        facts["pad_token_id"], facts["im_end_token_id"], facts["hist_token_start_idx"])


@pytest.mark.parametrize("prefix", TRAJECTORY_CASES)
def test_prompt_ids_and_pixel_values(runtime, prefix):
    expected, tensors = SET.load_expected(), SET.load_expected_tensors()
    model_input = case_input(prefix)
    with torch.inference_mode():
        prepared = runtime.prepare_inputs(model_input)
    spec = runtime.prompt_spec(model_input, len(model_input.frames))
    grid = tensors[f"{prefix}image_grid_thw"]
    assert render_prompt_text(runtime.tokenizer, grid.shape[0], spec) == \
        expected[f"{prefix}prompt_text"]
    unfused = build_unfused_input_ids(runtime.tokenizer, runtime.token_ids, grid, spec=spec)
    assert torch.equal(unfused, tensors[f"{prefix}input_ids_unfused"])
    assert torch.equal(prepared.input_ids, tensors[f"{prefix}input_ids"])
    assert torch.equal(prepared.image_grid_thw, grid)
    assert list(prepared.pixel_values.shape) == expected[f"{prefix}pixel_values_shape"]
    assert _sha256(prepared.pixel_values) == expected[f"{prefix}pixel_values_sha256_float32_le"]
    if prefix == "nav_":
        start, end = expected["nav_route_span"]
        assert torch.equal(prepared.input_ids[:, start:end + 1], tensors["nav_route_token_ids"])
        assert torch.equal(prepared.unguided_input_ids, tensors["nav_unguided_input_ids"])
        assert prepared.route_len == tensors["nav_route_token_ids"].shape[1]


def _teacher_forced(runtime, prefix):
    """Prefill over the case's ids ++ the continuation without its extra token (the
    official cache after generation); returns (prefill result, cache, prepared)."""
    tensors = SET.load_expected_tensors()
    with torch.inference_mode():
        prepared = runtime.prepare_inputs(case_input(prefix))
        ids = torch.cat([prepared.input_ids, tensors["tf_continuation_ids"][:, :-1]], dim=1)
        cache = generation.PreallocatedKVCache(runtime.network.num_layers,
                                               ids.shape[1] + tensors["tf_step_x"].shape[2], 1)
        result = generation.prefill(runtime.network, ids, prepared.pixel_values,
                                    prepared.image_grid_thw, cache)
    return result, cache, prepared


def _offset(sequence: torch.Tensor, token: int) -> int:
    return int((sequence.reshape(-1) == token).nonzero()[0, 0]) + 1


def _context(runtime, result, cache, prompt_ids) -> nav_guidance.ExpertContext:
    continuation = SET.load_expected_tensors()["tf_continuation_ids"][:, :-1]
    offset = _offset(torch.cat([prompt_ids, continuation], dim=1),
                     runtime.token_ids.traj_future_start)
    return nav_guidance.ExpertContext(cache, cache.get_seq_length(), torch.tensor([offset]),
                                      result.rope_deltas)


def _expert_inputs(runtime, context, num_actions):
    mask = generation.expert_attention_mask(context.offsets, context.cache_len, num_actions,
                                            torch.float32,
                                            runtime.network.spec.expert_non_causal_attention)
    positions = generation.expert_position_ids(context.offsets, context.rope_deltas,
                                               num_actions)
    return positions, mask


@pytest.mark.parametrize("prefix", TRAJECTORY_CASES)
def test_teacher_forced_expert_path(runtime, prefix):
    """Offset, rope deltas, expert positions and mask facts, per-step velocities given the
    recorded x, and the trajectory from the fixed noise."""
    expected, tensors, inputs = SET.load_expected(), SET.load_expected_tensors(), SET.load_inputs()
    result, cache, prepared = _teacher_forced(runtime, prefix)
    context = _context(runtime, result, cache, prepared.input_ids)
    tf = f"{prefix}tf_"
    assert context.offsets.tolist() == [expected[f"{tf}offset"]]
    assert context.cache_len == expected[f"{tf}prefill_seq_len"]
    assert result.rope_deltas == int(tensors[f"{tf}rope_deltas"].item())
    num_actions = tensors[f"{tf}step_x"].shape[2]
    positions, mask = _expert_inputs(runtime, context, num_actions)
    assert torch.equal(positions, tensors[f"{tf}expert_position_ids"])
    assert list(mask.shape) == expected[f"{tf}expert_attention_mask_shape"]
    assert (mask[0, 0, 0] < 0).nonzero().flatten().tolist() == \
        expected[f"{tf}expert_attention_mask_masked_cols"]
    with torch.inference_mode():
        for k in range(tensors[f"{tf}step_x"].shape[0]):
            v = expert_velocity(runtime.network, tensors[f"{tf}step_x"][k],
                                tensors[f"{tf}step_t"][k], cache, positions, mask,
                                context.cache_len)
            torch.testing.assert_close(v, tensors[f"{tf}step_velocity"][k], atol=VELOCITY_TOL,
                                       rtol=0, msg=lambda m: f"step {k}: {m}")
        actions = generation.sample_actions(runtime.network, cache, context.cache_len,
                                            context.offsets, context.rope_deltas,
                                            inputs["diffusion_init_noise"],
                                            steps=tensors[f"{tf}step_x"].shape[0])
    traj = runtime.action_space.action_to_traj(actions, *SET.history_inputs())
    torch.testing.assert_close(traj["xyz"], tensors[f"{tf}pred_xyz"][:, 0, 0], atol=XYZ_TOL,
                               rtol=0)
    torch.testing.assert_close(traj["rot"], tensors[f"{tf}pred_rot"][:, 0, 0], atol=ROT_TOL,
                               rtol=0)


@pytest.mark.parametrize("path", ["eager", "fast"])
@pytest.mark.parametrize("prefix", TRAJECTORY_CASES)
def test_forced_decoding_on_the_runtime(runtime, prefix, path):
    """The runtime's own prompt, prefill and decode loop, forced to the continuation, on
    both paths: the recorded trajectory within the README's tolerance (the official
    real-generate cross-check differs from the teacher-forced one by float rounding)."""
    expected, tensors, inputs = SET.load_expected(), SET.load_expected_tensors(), SET.load_inputs()
    options = InferenceOptions(num_samples=1, max_coc_tokens=256, nav_guidance_scale=0.0)
    with torch.inference_mode():
        prepared = runtime.prepare_inputs(case_input(prefix))
        raw = runtime.run_prepared(prepared, options, inputs["diffusion_init_noise"].numpy(),
                                   forced_tokens=tensors["tf_continuation_ids"][0], path=path)
        samples = runtime.to_samples(raw, prepared)
    tf = f"{prefix}tf_"
    assert raw.path == path
    assert raw.offsets.tolist() == [expected[f"{tf}offset"]]
    assert samples[0].coc == expected[f"{tf}extra_cot"][0][0][0]
    np.testing.assert_allclose(samples[0].xyz, tensors[f"{tf}pred_xyz"][0, 0, 0].numpy(),
                               atol=XYZ_TOL, rtol=0)
    np.testing.assert_allclose(samples[0].rot, tensors[f"{tf}pred_rot"][0, 0, 0].numpy(),
                               atol=ROT_TOL, rtol=0)


def _cfg_weight_and_noise():
    kwargs, inputs = SET.load_expected()["cfg_diffusion_kwargs"], SET.load_inputs()
    assert kwargs["use_classifier_free_guidance"] is True
    noise = inputs["diffusion_init_noise"] * float(kwargs.get("temperature", 1.0))
    return float(kwargs["inference_guidance_weight"]), noise


def test_cfg_teacher_forced(runtime):
    """Guided and unguided caches, offsets, positions; per-step guided, unguided and
    combined velocities given the recorded x; the guided trajectory."""
    expected, tensors = SET.load_expected(), SET.load_expected_tensors()
    facts = expected["cfg_tf"]
    weight, noise = _cfg_weight_and_noise()
    result, cache, prepared = _teacher_forced(runtime, "nav_")
    guided = _context(runtime, result, cache, prepared.input_ids)
    continuation = tensors["tf_continuation_ids"][:, :-1]
    with torch.inference_mode():
        unguided = nav_guidance.unguided_context(
            runtime.network, prepared.unguided_input_ids, prepared.pixel_values,
            prepared.image_grid_thw, continuation, guided.offsets, prepared.route_len,
            tensors["cfg_tf_step_x"].shape[2])
    assert guided.offsets.tolist() == [facts["guided"]["offset"]]
    assert guided.cache_len == facts["guided"]["kv_cache_seq_len"]
    assert unguided.offsets.tolist() == [facts["unguided"]["offset"]]
    assert prepared.unguided_input_ids.shape[1] == facts["unguided"]["prefix_len"]
    # The official unguided cache also holds the tokens generated after
    # <|traj_future_start|> (masked in every expert call); ours stops before them.
    forwarded = facts["unguided"]["generated_tokens_forwarded"]
    after = len(forwarded) - _offset(torch.tensor(forwarded), runtime.token_ids.traj_future_start)
    assert unguided.cache_len == facts["unguided"]["kv_cache_seq_len"] - after
    assert guided.rope_deltas == int(tensors["cfg_tf_rope_deltas_guided"].item())
    assert unguided.rope_deltas == int(tensors["cfg_tf_rope_deltas_unguided"].item())
    num_actions = tensors["cfg_tf_step_x"].shape[2]
    contexts = {}
    for name, context in (("guided", guided), ("unguided", unguided)):
        contexts[name] = (context,) + _expert_inputs(runtime, context, num_actions)
        assert torch.equal(contexts[name][1], tensors[f"cfg_tf_expert_position_ids_{name}"])
    with torch.inference_mode():
        for k in range(tensors["cfg_tf_step_x"].shape[0]):
            x, t = tensors["cfg_tf_step_x"][k], tensors["cfg_tf_step_t"][k]
            v = {name: expert_velocity(runtime.network, x, t, ctx.cache, pos, mask,
                                       ctx.cache_len)
                 for name, (ctx, pos, mask) in contexts.items()}
            for name in v:
                torch.testing.assert_close(v[name], tensors[f"cfg_tf_step_velocity_{name}"][k],
                                           atol=VELOCITY_TOL, rtol=0)
            combined = (1 - weight) * v["unguided"] + weight * v["guided"]
            torch.testing.assert_close(combined, tensors["cfg_tf_step_velocity"][k],
                                       atol=VELOCITY_TOL * max(1.0, 2 * abs(weight)), rtol=0)
    for sampler in (nav_guidance.guided_sample_actions,
                    nav_guidance.batched_guided_sample_actions):
        calls = []
        with torch.inference_mode():
            actions = sampler(runtime.network, guided, unguided, noise,
                              tensors["cfg_tf_step_x"].shape[0], weight,
                              record=lambda k, x, t, v, vg, vu: calls.append((x, v, vg, vu)))
        assert len(calls) * 2 == facts["num_expert_calls"], sampler.__name__
        torch.testing.assert_close(calls[0][0], tensors["cfg_tf_step_x"][0])
        for k, (x, v, vg, vu) in enumerate(calls):  # along our own x: rounding apart
            for have, key in ((vg, "guided"), (vu, "unguided")):
                torch.testing.assert_close(have, tensors[f"cfg_tf_step_velocity_{key}"][k],
                                           atol=VELOCITY_TOL, rtol=0)
        traj = runtime.action_space.action_to_traj(actions, *SET.history_inputs())
        torch.testing.assert_close(traj["xyz"], tensors["cfg_tf_pred_xyz"][:, 0, 0],
                                   atol=XYZ_TOL, rtol=0)
        torch.testing.assert_close(traj["rot"], tensors["cfg_tf_pred_rot"][:, 0, 0],
                                   atol=ROT_TOL, rtol=0)


@pytest.mark.parametrize("path", ["eager", "fast"])
def test_cfg_through_the_runtime(runtime, path):
    """nav_guidance_scale = the recorded weight: the runtime's own guided call, forced to
    the continuation, gives the official real-generate CFG trajectory, on both paths (the
    fast one: guided state, one expert batch per Euler step)."""
    tensors = SET.load_expected_tensors()
    weight, noise = _cfg_weight_and_noise()
    options = InferenceOptions(num_samples=1, nav_guidance_scale=weight)
    with torch.inference_mode():
        prepared = runtime.prepare_inputs(case_input("cfg_"))
        raw = runtime.run_prepared(prepared, options, noise.numpy(),
                                   forced_tokens=tensors["tf_continuation_ids"][0], path=path)
        samples = runtime.to_samples(raw, prepared)
    assert raw.path == path  # guidance runs on the fast path too
    np.testing.assert_allclose(samples[0].xyz,
                               tensors["cfg_forced_generate_pred_xyz"][0, 0, 0].numpy(),
                               atol=XYZ_TOL, rtol=0)
    np.testing.assert_allclose(samples[0].xyz, tensors["cfg_tf_pred_xyz"][0, 0, 0].numpy(),
                               atol=XYZ_TOL, rtol=0)
    # Guidance changes the trajectory: without it the nav_ result comes out.
    np.testing.assert_allclose(
        runtime.to_samples(runtime.run_prepared(
            prepared, InferenceOptions(num_samples=1, nav_guidance_scale=0.0),
            SET.load_inputs()["diffusion_init_noise"].numpy(),
            forced_tokens=tensors["tf_continuation_ids"][0], path=path), prepared)[0].xyz,
        tensors["nav_tf_pred_xyz"][0, 0, 0].numpy(), atol=XYZ_TOL, rtol=0)


def test_vqa_prompt(runtime):
    expected, tensors = SET.load_expected(), SET.load_expected_tensors()
    cameras = tuple(int(i) for i in expected["vqa_camera_indices"])
    spec = PromptSpec(camera_indices=cameras, question=expected["vqa_question"])
    grid = tensors["vqa_image_grid_thw"]
    assert render_prompt_text(runtime.tokenizer, grid.shape[0], spec) == \
        expected["vqa_prompt_text"]
    ids = build_unfused_input_ids(runtime.tokenizer, runtime.token_ids, grid, spec=spec)
    assert torch.equal(ids, tensors["vqa_input_ids"])


def _call_cameras(call: str):
    """(image count, camera ids) from a prompt_only_cases call description such as
    'create_message(8 frames, camera_indices=tensor([1, 9]))'."""
    match = re.search(r"\((\d+) frames, camera_indices=tensor\(\[([\d, ]+)\]\)\)", call)
    assert match, call
    return int(match.group(1)), tuple(int(v) for v in match.group(2).split(","))


@pytest.mark.parametrize("case", ["unknown_camera_id_9", "repeated_camera_id"])
def test_prompt_only_camera_cases(runtime, case):
    data = SET.load_expected()["prompt_only_cases"][case]
    count, cameras = _call_cameras(data["call"])
    assert count == len(cameras) * FRAMES_PER_CAMERA
    text = render_prompt_text(runtime.tokenizer, count, PromptSpec(camera_indices=cameras))
    assert text == data["prompt_text"]


def test_prompt_only_nav_without_camera_indices(runtime):
    expected = SET.load_expected()
    data = expected["prompt_only_cases"]["nav_without_camera_indices"]
    num_images = SET.load_expected_tensors()["image_grid_thw"].shape[0]
    text = render_prompt_text(runtime.tokenizer, num_images,
                              PromptSpec(nav_text=expected["nav_text"]))
    assert text == data["prompt_text"]
    # use_nav_prompt=True renders the cam_ prompt: there is no such switch to offer.
    assert expected["prompt_only_cases"]["use_nav_prompt_true_equals_cam_prompt"] is True


def _vqa_input():
    expected = SET.load_expected()
    cameras = tuple(int(i) for i in expected["vqa_camera_indices"])
    inputs = SET.load_inputs()
    return ModelInput(frames=case_frames(cameras),
                      history_xyz=inputs["ego_history_xyz"][0, 0].double().numpy(),
                      history_rot=inputs["ego_history_rot"][0, 0].double().numpy(),
                      camera_indices=cameras)


def test_vqa_greedy_ids_and_logits(runtime):
    """Greedy answer of the official generate_text (top_k=1): the same ids (no token is
    banned, it ran to the token limit here), raw logits within the README's tolerance."""
    expected, tensors = SET.load_expected(), SET.load_expected_tensors()
    greedy = expected["vqa_greedy"]
    want = tensors["vqa_greedy_generated_ids"][0]
    out = runtime.ask(_vqa_input(), expected["vqa_question"],
                      max_tokens=greedy["generation_config_used"]["max_new_tokens"],
                      keep_logits=True)
    assert out.tokens.tolist() == want.tolist() == greedy["generated_ids"]
    torch.testing.assert_close(out.logits, tensors["vqa_greedy_logits"][0], atol=1e-4, rtol=0)
    assert out.stopped_at_eos is (greedy["stopped_by"] != "max_generation_length")
    assert out.answer == greedy["extra"]["answer"][0][0]


def test_vqa_forced_answer_logits_and_extraction(runtime):
    expected, tensors = SET.load_expected(), SET.load_expected_tensors()
    forced = tensors["vqa_forced_generated_ids"][0]
    out = runtime.ask(_vqa_input(), expected["vqa_question"], max_tokens=len(forced) + 8,
                      forced_tokens=forced, keep_logits=True)
    assert out.tokens.tolist() == forced.tolist()
    assert out.stopped_at_eos  # <|im_end|> ends it, not <|answer_end|>
    torch.testing.assert_close(out.logits, tensors["vqa_forced_logits"][0], atol=1e-4, rtol=0)
    assert out.answer == expected["vqa_forced"]["extra"]["answer"][0][0]
