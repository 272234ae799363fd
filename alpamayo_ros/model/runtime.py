"""AlpamayoRuntime: the single inference API (PlannerModel) of the node, replay and benches.

It runs both checkpoint families (R1 and 1.5, from config.json's model_type): for 1.5 the
prompt names the cameras of ``ModelInput.camera_indices`` and may carry
``ModelInput.navigation_text`` (with classifier-free guidance when
``InferenceOptions.nav_guidance_scale`` is not 0; nav_guidance.py).

One ``predict`` call: validate the input, preprocess the frames and build the prompt,
prefill the VLM once (batch 1), decode the reasoning for N sample rows with a shared KV
cache, integrate the flow-matching expert, and turn the actions into t0-frame waypoints at
t0 + 0.1 .. 6.4 s. Everything loads from local directories (see docs/model.md).

Two engines compute the same outputs (engine.py). The *fast* path (``fast_path=True``, the
default; ``fast_path.FastEngine``) keeps a static KV cache per sample-row count, replays the
decode and flow-matching steps as CUDA graphs on CUDA, samples without host syncs and
reuses the vision features of frames seen in the previous call when the input names its
frames (``ModelInput.frame_keys``). The *eager* path (``generation.EagerEngine``) is the
reference it is tested against.

``warmup`` captures the graphs before the first real call and checks the fast path against
the eager one on the warm-up input (:meth:`AlpamayoRuntime.self_check`). When a step cannot
be captured, the fast path raises, or the first Euler step's velocities differ beyond
``FastPathConfig.self_check_atol``, the runtime switches to the eager path for good and
says why in :meth:`AlpamayoRuntime.inference_path` (the node shows it in /diagnostics and
in PlannerOutput.model): slower plans, never silently wrong ones.
"""
from __future__ import annotations

import dataclasses
import gc
import importlib.util
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from alpamayo_ros.core.errors import (AlpamayoError, ConfigError, ModelInputError,
                                      ModelRuntimeError)
from alpamayo_ros.core.model_family import ModelFamily
from alpamayo_ros.core.model_input import MIN_FRAME_SIDE, validate_model_input
from alpamayo_ros.core.types import (CAMERA_IMAGE_SHAPE, FRAMES_PER_CAMERA, HISTORY_OFFSETS,
                                     NUM_CAMERAS, NUM_HISTORY, NUM_WAYPOINTS, InferenceOptions,
                                     InferencePath, ModelInput, ModelOutput, StageTimings,
                                     TrajectorySample)
from alpamayo_ros.model.cuda_graphs import LOG, OnceLog
from alpamayo_ros.model.engine import Engine, Prediction, PreparedInputs, Request
from alpamayo_ros.model.fast_path import FastEngine, FastPathConfig
from alpamayo_ros.model.generation import EagerEngine
from alpamayo_ros.model.checkpoint import (compute_model_id, locate_checkpoint,
                                           resolve_processor_dir)
from alpamayo_ros.model.modeling import AlpamayoR1Network, default_device_dtype, load_network
from alpamayo_ros.model.prompt import PromptSpec
from alpamayo_ros.model.prompt_1_5 import remove_route_span, route_span

_ATTN_CHOICES = ("sdpa", "eager", "flash_attention_2")
# The instruction of the guided warm-up call (official phrasing, notebooks/nav_demo_samples).
WARMUP_NAV_TEXT = "Turn left in 40m"
PATHS = ("fast", "eager")


@dataclass(frozen=True)
class PathComparison:
    """Fast against eager on one input with the same forced CoC and noise.

    velocity_max_diff: largest difference of the first Euler step's velocities (one step
    from the same noise: x1 - x0 = v); velocity_max: the eager velocities' largest
    magnitude (the scale of that difference); same_decode: equal tokens, stop rows, expert
    offsets and cache length.
    """

    velocity_max_diff: float
    velocity_max: float
    same_decode: bool


@dataclass
class QuestionAnswer:
    """What ``AlpamayoRuntime.ask`` returns: the answer ("" when the model wrote no
    ``<|answer_end|>``), the generated ids, their raw logits (when asked for), whether the
    end-of-turn token ended it (else the token limit did), and the seconds it took."""

    answer: str
    tokens: torch.Tensor
    logits: Optional[torch.Tensor]
    stopped_at_eos: bool
    seconds: float


def choose_vlm_attention(device: torch.device, dtype: torch.dtype,
                         requested: Optional[str]) -> str:
    """FlashAttention 2 for the VLM on CUDA with fp16/bf16 when flash-attn is installed,
    else SDPA; an explicit request is checked and kept."""
    if requested is not None:
        if requested not in _ATTN_CHOICES:
            raise ConfigError(f"attn_implementation must be one of {_ATTN_CHOICES}, have "
                              f"{requested!r}")
        if requested == "flash_attention_2" and (
                device.type != "cuda" or importlib.util.find_spec("flash_attn") is None):
            raise ConfigError("flash_attention_2 needs a CUDA device and the flash-attn "
                              f"package (device {device}, flash_attn installed: "
                              f"{importlib.util.find_spec('flash_attn') is not None})")
        return requested
    if (device.type == "cuda" and dtype in (torch.float16, torch.bfloat16)
            and importlib.util.find_spec("flash_attn") is not None):
        return "flash_attention_2"
    return "sdpa"


class AlpamayoRuntime:
    """Alpamayo (R1 or 1.5) inference on one device; implements core.types.PlannerModel."""

    # Smallest frame side it accepts [px] (one merged vision patch; core.model_input).
    min_frame_side = MIN_FRAME_SIDE

    def __init__(self, network: AlpamayoR1Network, tokenizer, token_ids, image_config,
                 action_space, *, family: ModelFamily, checkpoint_dir: Path,
                 processor_dir: Path, device: torch.device,
                 dtype: torch.dtype, vlm_attn_implementation: str,
                 expert_attn_implementation: str, model_id: str, fast_path: bool = True,
                 fast_path_config: Optional[FastPathConfig] = None) -> None:
        self.network = network
        self.family = family
        self.tokenizer = tokenizer
        self.token_ids = token_ids
        self.image_config = image_config
        self.action_space = action_space
        self.checkpoint_dir = Path(checkpoint_dir)
        self.processor_dir = Path(processor_dir)
        self.device = device
        self.dtype = dtype
        self.vlm_attn_implementation = vlm_attn_implementation
        self.expert_attn_implementation = expert_attn_implementation
        self.model_id = model_id
        # One predict at a time: the pixel buffer and prompt cache below (and the device)
        # are shared.
        self._predict_lock = threading.Lock()
        # Reused pixel_values buffer (about 70 MB for 16 frames): allocating it afresh every
        # cycle costs more in page faults than the normalisation itself.
        self._pixel_buffer: Optional[torch.Tensor] = None
        # ((image grid, prompt spec), prompt ids before history fusion, M-RoPE) of the last
        # call: rendering the chat template and tokenizing the ~3k-token prompt depend on
        # the grid and the prompt spec only.
        self._unfused_prompt: Optional[tuple] = None
        self.fast_path = bool(fast_path)
        self.fast_path_config = fast_path_config or FastPathConfig()
        # Shape changes, captures and capture failures are logged once each (and kept here).
        self.log = OnceLog()
        self._engines: dict[str, Engine] = {}
        # Why the fast path was switched off (warm-up self-check); "" while it was not.
        self._fallback_reason = ""

    @classmethod
    def from_pretrained(cls, checkpoint_dir, processor_dir=None, device="cpu",
                        dtype: Optional[torch.dtype | str] = None,
                        attn_implementation: Optional[str] = None, fast_path: bool = True,
                        fast_path_config: Optional[FastPathConfig] = None
                        ) -> "AlpamayoRuntime":
        """Load a checkpoint in the official format from local directories.

        checkpoint_dir: config.json + model.safetensors (or index + shards).
        processor_dir: base Qwen3-VL directory (config.json, tokenizer, chat template,
            preprocessor_config.json); default: config "vlm_name_or_path" if it is a local
            directory. dtype: a torch dtype or its name ("float32", "bfloat16", "float16",
            "auto"); default bfloat16 on CUDA, float32 otherwise.
        attn_implementation: VLM attention ("sdpa", "eager", "flash_attention_2"); default
            FlashAttention 2 when usable, else SDPA. The expert always uses SDPA (or eager
            when eager is asked for) because it needs an additive float mask.
        fast_path: use the fast path (see the module docstring) by default in predict;
            False keeps the eager reference path. fast_path_config: its settings.
        """
        from alpamayo_ros.model.action_space import ActionSpaceConfig, UnicycleActionSpace
        from alpamayo_ros.model.image_processor import ImageProcessorConfig
        from alpamayo_ros.model.prompt import (load_extended_tokenizer,
                                               tokenizer_expectations_from_config)

        device = torch.device(device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(
                f"model.device: have {str(device)!r}, but torch {torch.__version__} sees no "
                "CUDA device (CPU build or no driver); run on the CPU with "
                "model.device cpu (node: -p model.device:=cpu, launch: device:=cpu, "
                "replay: --device cpu)")
        dtype = default_device_dtype(device, dtype)
        files = locate_checkpoint(checkpoint_dir)
        proc_dir = resolve_processor_dir(files.checkpoint_dir, files.config, processor_dir)
        # The tokenizer check comes first: a mismatch refuses before any weight is read.
        tokenizer, token_ids = load_extended_tokenizer(
            proc_dir, **tokenizer_expectations_from_config(files.config))
        image_config = ImageProcessorConfig.from_dir(
            proc_dir, min_pixels=files.config.get("min_pixels"),
            max_pixels=files.config.get("max_pixels"))
        vlm_attn = choose_vlm_attention(device, dtype, attn_implementation)
        expert_attn = "eager" if vlm_attn == "eager" else "sdpa"
        network = load_network(files, proc_dir, device=device, dtype=dtype,
                               vlm_attn_implementation=vlm_attn,
                               expert_attn_implementation=expert_attn)
        action_space = UnicycleActionSpace(
            ActionSpaceConfig.from_checkpoint_config(files.config["action_space_cfg"]))
        family = files.family
        return cls(network, tokenizer, token_ids, image_config, action_space, family=family,
                   checkpoint_dir=files.checkpoint_dir, processor_dir=proc_dir, device=device,
                   dtype=dtype, vlm_attn_implementation=vlm_attn,
                   expert_attn_implementation=expert_attn,
                   model_id=f"{family.model_type}-{compute_model_id(files)}",
                   fast_path=fast_path, fast_path_config=fast_path_config)

    def describe(self) -> dict:
        """Identity and settings of the loaded model."""
        return dict(checkpoint=str(self.checkpoint_dir), processor_dir=str(self.processor_dir),
                    family=self.family.model_type, model_id=self.model_id, device=str(self.device),
                    dtype=str(self.dtype).replace("torch.", ""),
                    attn_implementation=self.vlm_attn_implementation,
                    expert_attn_implementation=self.expert_attn_implementation,
                    param_count=self.network.parameter_count(), fast_path=self.fast_path,
                    cuda_graphs=(self.fast_path and self.fast_path_config.cuda_graphs
                                 and self.device.type == "cuda"))

    def engine_for(self, path: str) -> Engine:
        """The engine of ``path`` ("fast" or "eager"), created on first use."""
        if path not in PATHS:
            raise ConfigError(f"path must be one of {PATHS}, have {path!r}")
        engine = self._engines.get(path)
        if engine is None:
            if path == "fast":
                engine = FastEngine(self.network, self.token_ids, self.device, self.dtype,
                                    self.fast_path_config, self.log)
            else:
                engine = EagerEngine(self.network, self.token_ids, self.device, self.dtype)
            self._engines[path] = engine
        return engine

    @property
    def engine(self) -> FastEngine:
        """The fast-path engine (created on first use)."""
        return self.engine_for("fast")

    def fast_path_report(self) -> dict:
        """Row states, captured steps, capture failures, vision reuse counts and the
        messages logged once (shape changes, captures, capture failures)."""
        fast = self._engines.get("fast")
        if fast is None:
            return dict(cuda_graphs=False, states=[], capture_failures=[], vision={},
                        messages=list(self.log.messages))
        return fast.report()

    def inference_path(self) -> InferencePath:
        """The path that serves predict, and why it runs other than configured (the
        warm-up self-check switched the fast path off, or a step runs without its graph)."""
        if not self.fast_path:
            return InferencePath("eager", self._fallback_reason)
        fast = self._engines.get("fast")
        failures = fast.capture_failures() if fast is not None else []
        problem = ("steps run without their CUDA graph (slower): " + "; ".join(failures)
                   if failures else "")
        return InferencePath("fast", problem)

    def close(self) -> None:
        """Release the weights, caches and captured graphs (a lifecycle cleanup): on CUDA
        the memory goes back to the device. The runtime cannot predict afterwards."""
        with self._predict_lock:
            self._engines = {}
            self._pixel_buffer = None
            self._unfused_prompt = None
            self.network = None
            gc.collect()
            if self.device.type == "cuda":
                torch.cuda.empty_cache()

    def clear_vision_cache(self) -> None:
        """Forget the vision features of earlier frames (e.g. after a clock jump, when frame
        keys may be reused for other images)."""
        for engine in self._engines.values():
            engine.clear_vision_cache()

    # ------------------------------------------------------------------ stages
    def prepare_inputs(self, model_input: ModelInput,
                       frame_keys: Optional[tuple] = None) -> PreparedInputs:
        """Validated ModelInput -> pixel values, prompt ids and history tensors.

        frame_keys: one hashable per frame (see ModelInput.frame_keys); with the fast path,
        only frames without cached vision features are preprocessed.
        """
        from alpamayo_ros.core.model_input import normalize_frames
        from alpamayo_ros.model.image_processor import image_grid_thw
        from alpamayo_ros.model.prompt import fuse_history_tokens

        frames = normalize_frames(model_input.frames)
        spec = self.prompt_spec(model_input, len(frames))
        height, width = (int(v) for v in frames[0].shape[:2])
        keys = encoded = None
        if frame_keys is not None and self.fast_path:
            keys = tuple((key, height, width) for key in frame_keys)
            encoded = tuple(self.engine.missing_frames(keys))
        pixel_values = self._pixels(frames, encoded)
        grid = image_grid_thw(len(frames), height, width, self.image_config)
        input_ids = fuse_history_tokens(self._unfused_prompt_for(grid, spec), self.token_ids,
                                        model_input.history_xyz).to(self.device)
        unguided, route_len, route_start = None, 0, -1
        if spec.nav_text is not None:
            span = route_span(input_ids, self.token_ids.route_start, self.token_ids.route_end)
            if span is not None:
                route_start = span[0]
                unguided, route_len = remove_route_span(input_ids, self.token_ids.route_start,
                                                        self.token_ids.route_end)
        return PreparedInputs(
            pixel_values=pixel_values, image_grid_thw=grid.to(self.device), input_ids=input_ids,
            history_xyz=torch.as_tensor(model_input.history_xyz, dtype=torch.float32),
            history_rot=torch.as_tensor(model_input.history_rot, dtype=torch.float32),
            frame_keys=keys, encoded_frames=encoded, rope=self._unfused_prompt[2],
            unguided_input_ids=unguided, route_len=route_len, route_start=route_start)

    def prompt_spec(self, model_input: ModelInput, num_frames: int) -> PromptSpec:
        """What the prompt says for this input and this checkpoint's family.

        R1: the 16 frames of its 4 cameras, no labels; a navigation text or another camera
        set is refused (the planner drops the instruction with a warning before). 1.5: the
        cameras are named when ``camera_indices`` is given, the instruction is added.
        """
        cameras = model_input.camera_indices
        cameras = None if cameras is None else tuple(int(i) for i in cameras)
        family = self.family
        if family.fixed_cameras is not None:
            if model_input.navigation_text is not None:
                raise ModelInputError(f"an {family.label} checkpoint takes no navigation text")
            need = len(family.fixed_cameras) * FRAMES_PER_CAMERA
            if num_frames != need or cameras not in (None, family.fixed_cameras):
                raise ModelInputError(
                    f"an {family.label} checkpoint takes {need} frames of the cameras "
                    f"{list(family.fixed_cameras)}, have {num_frames} frames"
                    + ("" if cameras is None else f" of the cameras {list(cameras)}"))
            return PromptSpec()
        return PromptSpec(camera_indices=cameras, nav_text=model_input.navigation_text)

    def _unfused_prompt_for(self, grid: torch.Tensor, spec: PromptSpec) -> torch.Tensor:
        """(1, L) CPU prompt ids with the history placeholders still in (prompt.
        build_unfused_input_ids), built again only when the (CPU) image grid or the prompt
        spec (cameras, instruction) change.

        Also keeps the prompt's M-RoPE ids: they depend only on where the image tokens are
        and on the grid (Qwen3VLModel.get_rope_index), not on the fused history tokens, so
        the fast path skips recomputing them (a Python loop with host syncs) every call.
        """
        from alpamayo_ros.model.prompt import build_unfused_input_ids

        key = (tuple(grid.flatten().tolist()), spec)
        if self._unfused_prompt is None or self._unfused_prompt[0] != key:
            ids = build_unfused_input_ids(self.tokenizer, self.token_ids, grid.cpu(),
                                          merge_size=self.image_config.merge_size, spec=spec)
            position_ids, rope_deltas = self.network.vlm.model.get_rope_index(ids, grid.cpu(),
                                                                              None)
            self._unfused_prompt = (key, ids, (position_ids.to(self.device),
                                               rope_deltas.to(self.device)))
        return self._unfused_prompt[1]

    def _pixels(self, frames, indices: Optional[tuple[int, ...]]) -> torch.Tensor:
        """pixel_values of frames[indices] (all frames when None), written into a buffer
        kept across calls for the frame size."""
        from alpamayo_ros.model.image_processor import pixel_values_shape, preprocess_frames

        height, width = frames[0].shape[:2]
        shape = pixel_values_shape(len(frames), height, width, self.image_config)
        buffer = self._pixel_buffer
        if buffer is None or tuple(buffer.shape) != shape:
            buffer = torch.empty(shape, dtype=torch.float32, device=self.device)
            self._pixel_buffer = buffer
        if indices is None:
            return preprocess_frames(frames, self.image_config, layout="hwc",
                                     device=self.device, out=buffer)[0]
        if not indices:
            return buffer[:0]
        patches = shape[0] // len(frames)
        return preprocess_frames([frames[i] for i in indices], self.image_config, layout="hwc",
                                 device=self.device,
                                 out=buffer[:patches * len(indices)])[0]

    def run_prepared(self, prepared: PreparedInputs, options: InferenceOptions,
                     initial_noise: Optional[np.ndarray] = None,
                     forced_tokens: Optional[torch.Tensor] = None,
                     timings: Optional[StageTimings] = None,
                     path: Optional[str] = None) -> Prediction:
        """Prefill, CoC decode and flow matching on prepared inputs.

        initial_noise: (num_samples, 64, 2) flow start (default: drawn from options.seed
        before decoding, see engine.seed_and_noise; same seed, same draws on each path).
        forced_tokens: (T,) ids fed instead of sampled ones (teacher forcing, for checks).
        timings: filled with vision_prefill / coc_decode / diffusion seconds when given.
        path: "fast" or "eager" (default: the runtime's choice).
        """
        path = path or ("fast" if self.fast_path else "eager")
        guided = prepared.unguided_input_ids is not None and options.nav_guidance_scale != 0
        engine = self.engine_for(path)
        request = Request(
            rows=int(options.num_samples), max_new_tokens=int(options.max_coc_tokens),
            diffusion_steps=int(options.diffusion_steps), sample=bool(options.sample_coc),
            temperature=float(options.temperature), top_p=float(options.top_p),
            seed=options.seed, noise=self._initial_noise(initial_noise, options.num_samples),
            forced_tokens=forced_tokens,
            nav_guidance_scale=float(options.nav_guidance_scale) if guided else 0.0)
        clock = _StageClock(self.device, timings)
        fields = {"vision": "vision_prefill", "prefill": "vision_prefill",
                  "coc_decode": "coc_decode", "diffusion": "diffusion"}
        return engine.run(prepared, request, lap=lambda stage: clock.lap(fields[stage]))

    def _initial_noise(self, initial_noise, rows: int) -> Optional[torch.Tensor]:
        if initial_noise is None:
            return None
        noise = np.asarray(initial_noise, dtype=np.float32)
        if noise.shape != (rows, NUM_WAYPOINTS, 2):
            raise ModelInputError(f"initial_noise must be ({rows}, {NUM_WAYPOINTS}, 2) for "
                                  f"{rows} samples, have {noise.shape}")
        if not np.isfinite(noise).all():
            raise ModelInputError("initial_noise has non-finite values")
        return torch.from_numpy(noise).to(self.device)

    # ------------------------------------------------------------------ API
    def predict(self, model_input: ModelInput, options: InferenceOptions = InferenceOptions(),
                initial_noise: Optional[np.ndarray] = None) -> ModelOutput:
        """Plan from 16 frames and 16 history poses (see core.types.ModelInput).

        initial_noise: optional (num_samples, 64, 2) flow-matching start x (t = 0); by
        default it is drawn from the seeded generator before the CoC decode.
        With the fast path, ``model_input.frame_keys`` lets frames seen in the previous call
        skip preprocessing and the vision encoder.
        """
        timings = StageTimings()
        clock = _StageClock(self.device, timings)
        try:
            with self._predict_lock, torch.inference_mode():
                checked = validate_model_input(model_input)
                # Guided calls run on the fast path too (vision reuse included); with the
                # fast path off, prepare_inputs ignores the keys (every frame's patches).
                prepared = self.prepare_inputs(
                    checked, _frame_keys(model_input, len(checked.frames)))
                v0 = float(self.action_space.estimate_v0(prepared.history_xyz,
                                                         prepared.history_rot))
                clock.lap("preprocess")
                raw = self.run_prepared(prepared, options, initial_noise, timings=timings)
                clock.restart()
                samples = self.to_samples(raw, prepared, v0)
                clock.lap("postprocess")
        except AlpamayoError:
            raise
        except RuntimeError as exc:  # torch failures, CUDA out of memory, ...
            raise ModelRuntimeError(f"model failed during predict "
                                    f"({type(exc).__name__}): {exc}") from exc
        return ModelOutput(samples=samples, v0=v0, timings=timings, model_id=self.model_id)

    def ask(self, model_input: ModelInput, question: str, max_tokens: int = 64,
            forced_tokens: Optional[torch.Tensor] = None,
            keep_logits: bool = False) -> QuestionAnswer:
        """Answer a question about the frames of ``model_input`` (Alpamayo 1.5; its
        camera_indices name the cameras; the history is not used), as the official
        ``generate_text`` with top_k=1 (model/vqa.py). max_tokens: generated-token limit.
        forced_tokens / keep_logits: teacher forcing and raw logits, for checks.
        ModelInputError for an R1 checkpoint or a question refused by
        core.navigation.check_prompt_text (with the reason).
        """
        from alpamayo_ros.core.navigation import check_prompt_text
        from alpamayo_ros.core.model_input import normalize_frames
        from alpamayo_ros.model import vqa
        from alpamayo_ros.model.image_processor import image_grid_thw
        from alpamayo_ros.model.prompt import build_unfused_input_ids

        if not self.family.questions:
            raise ModelInputError(f"an {self.family.label} checkpoint answers no questions "
                                  "(an Alpamayo 1.5 checkpoint does)")
        try:
            question = check_prompt_text(question, "question")
        except ValueError as exc:
            raise ModelInputError(str(exc)) from None
        if not question:
            raise ModelInputError("question is empty")
        if int(max_tokens) < 1:
            raise ModelInputError(f"max_tokens must be >= 1, have {max_tokens}")
        start = time.perf_counter()
        try:
            with self._predict_lock, torch.inference_mode():
                checked = validate_model_input(model_input)
                frames = normalize_frames(checked.frames)
                spec = PromptSpec(camera_indices=checked.camera_indices, question=question)
                height, width = (int(v) for v in frames[0].shape[:2])
                grid = image_grid_thw(len(frames), height, width, self.image_config)
                ids = build_unfused_input_ids(self.tokenizer, self.token_ids, grid,
                                              merge_size=self.image_config.merge_size,
                                              spec=spec).to(self.device)
                generated = vqa.generate_greedy(
                    self.network, ids, self._pixels(frames, None).to(self.dtype),
                    grid.to(self.device), self.token_ids.im_end, int(max_tokens),
                    forced_tokens, keep_logits)
        except AlpamayoError:
            raise
        except RuntimeError as exc:
            raise ModelRuntimeError(f"model failed while answering ({type(exc).__name__}): "
                                    f"{exc}") from exc
        return QuestionAnswer(vqa.answer_text(self.tokenizer, generated.tokens),
                              generated.tokens, generated.logits, generated.stopped_at_eos,
                              time.perf_counter() - start)

    def warmup(self, options: InferenceOptions = InferenceOptions(),
               frame_shape: tuple[int, int] = CAMERA_IMAGE_SHAPE,
               camera_indices: Optional[tuple[int, ...]] = None) -> float:
        """Prepare for serving calls like ``options`` with frames of ``frame_shape`` (H, W)
        from the cameras ``camera_indices`` (None: the R1 rig, unnamed).

        Runs one call on synthetic frames with a two-token forced CoC: allocates the static
        KV cache for options.num_samples rows and the caching allocator's blocks, and
        captures the decode and flow-matching steps as CUDA graphs (fast path on CUDA).
        With the fast path it then checks itself (see the module docstring) and switches
        to the eager path, logging an error, when the check fails. A checkpoint that takes
        navigation instructions, with options.nav_guidance_scale not 0, is warmed up and
        checked a second time with an instruction (WARMUP_NAV_TEXT): the guided calls'
        row state (guided and unguided rows, one expert batch per Euler step). Later calls
        with other shapes still work: they allocate or capture what they need and say so
        once. Returns the seconds it took (also logged).
        """
        height, width = (int(v) for v in frame_shape)
        start = time.perf_counter()
        texts: list[Optional[str]] = [None]
        if self.family.navigation and options.nav_guidance_scale != 0:
            texts.append(WARMUP_NAV_TEXT)
        try:
            with self._predict_lock, torch.inference_mode():
                forced = self._warmup_tokens()
                for nav_text in texts:
                    prepared = self.prepare_inputs(validate_model_input(
                        _warmup_input(height, width, camera_indices, nav_text)))
                    if self.fast_path:
                        reason = self._fast_path_trouble(prepared, options, forced)
                        if reason:
                            what = "" if nav_text is None else " (navigation guidance)"
                            self._fall_back(reason + what)
                    if not self.fast_path:
                        self.run_prepared(prepared, options, forced_tokens=forced)
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
        except AlpamayoError:
            raise
        except RuntimeError as exc:
            raise ModelRuntimeError(f"model failed during warm-up ({type(exc).__name__}): "
                                    f"{exc}") from exc
        seconds = time.perf_counter() - start
        LOG.log(logging.INFO, f"warm-up ({'fast' if self.fast_path else 'eager'} path, "
                f"{options.num_samples} sample(s), {height}x{width} frames) took "
                f"{seconds:.2f} s")
        return seconds

    def _warmup_tokens(self) -> torch.Tensor:
        return torch.tensor([self.token_ids.cot_end, self.token_ids.traj_future_start])

    def _fast_path_trouble(self, prepared: PreparedInputs, options: InferenceOptions,
                           forced: torch.Tensor) -> str:
        """Warm the fast path up and check it; why it must not serve, or "" when it may."""
        try:
            self.run_prepared(prepared, options, forced_tokens=forced, path="fast")
            failures = self.engine.capture_failures()
            if failures:
                return "CUDA graph capture failed: " + "; ".join(failures)
            check = self.self_check(prepared, options, forced)
        except (AlpamayoError, RuntimeError) as exc:
            return f"it failed on the warm-up input ({type(exc).__name__}: {exc})"
        atol = self.self_check_atol()
        if not check.same_decode:
            return ("its forced CoC decode differs from the eager path's (tokens, stop, "
                    "offsets or cache length)")
        if not check.velocity_max_diff <= atol:  # NaN fails too
            return (f"its first Euler step differs from the eager path's by "
                    f"{check.velocity_max_diff:.3g} (velocities up to "
                    f"{check.velocity_max:.3g}; tolerance {atol:g})")
        LOG.info(f"fast path self-check passed: first Euler step within "
                 f"{check.velocity_max_diff:.3g} of the eager path (tolerance {atol:g})")
        return ""

    def self_check_atol(self) -> float:
        """The self-check's velocity tolerance (FastPathConfig.self_check_atol)."""
        atol = self.fast_path_config.self_check_atol
        if atol is not None:
            return float(atol)
        return 1e-4 if self.dtype == torch.float32 else 0.05

    def self_check(self, prepared: PreparedInputs, options: InferenceOptions,
                   forced: Optional[torch.Tensor] = None) -> PathComparison:
        """Fast against eager on ``prepared`` for calls like ``options``: the same forced
        CoC (default: the warm-up's two tokens), the same fixed noise, one Euler step (see
        PathComparison). The sampler settings stay those of ``options`` (the forced tokens
        make them irrelevant), so the warm-up's captured decode step is the one checked."""
        forced = self._warmup_tokens() if forced is None else forced
        rows = int(options.num_samples)
        noise = torch.randn((rows, NUM_WAYPOINTS, 2),
                            generator=torch.Generator().manual_seed(0)).numpy()
        options = dataclasses.replace(options, diffusion_steps=1, seed=0)
        fast = self.run_prepared(prepared, options, noise, forced, path="fast")
        eager = self.run_prepared(prepared, options, noise, forced, path="eager")
        return compare_predictions(fast, eager, torch.from_numpy(noise))

    def _fall_back(self, reason: str) -> None:
        """Serve from the eager path from now on, and say why (log and inference_path)."""
        self._fallback_reason = (f"fast path switched off at warm-up: {reason}; plans come "
                                 "from the eager path (slower)")
        LOG.error(self._fallback_reason)
        self.log.messages.append(self._fallback_reason)
        self.fast_path = False
        self._engines.pop("fast", None)  # its caches and graphs
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def to_samples(self, raw: Prediction, prepared: PreparedInputs,
                   v0: Optional[float] = None) -> list[TrajectorySample]:
        """Actions -> t0-frame trajectories (float64) plus each row's CoC text and counts.

        coc_token_count counts the generated tokens up to and including
        <|traj_future_start|> (all generated tokens when the row was cut off).
        """
        from alpamayo_ros.model.prompt import extract_coc

        actions = raw.actions.float().cpu()
        rows = actions.shape[0]
        traj = self.action_space.action_to_traj(
            actions, prepared.history_xyz.expand(rows, -1, -1),
            prepared.history_rot.expand(rows, -1, -1, -1), v0=v0)
        arrays = {k: np.asarray(_to_numpy(v), dtype=np.float64) for k, v in traj.items()}
        tokens = raw.tokens.cpu()
        found = raw.found.cpu().tolist()
        samples = []
        for row in range(tokens.shape[0]):
            row_tokens = tokens[row].tolist()
            if found[row]:
                count = row_tokens.index(self.token_ids.traj_future_start) + 1
            else:
                count = len(row_tokens)
            samples.append(TrajectorySample(
                xyz=arrays["xyz"][row], rot=arrays["rot"][row], yaw=arrays["yaw"][row],
                speed=arrays["speed"][row], acceleration=arrays["acceleration"][row],
                curvature=arrays["curvature"][row],
                coc=extract_coc(self.tokenizer, self.token_ids, row_tokens[:count]),
                coc_token_count=count, coc_truncated=not found[row]))
        return samples


def compare_predictions(fast: Prediction, eager: Prediction, noise: torch.Tensor
                        ) -> PathComparison:
    """PathComparison of two one-Euler-step predictions from the same ``noise``."""
    same = (torch.equal(fast.tokens.cpu(), eager.tokens.cpu())
            and torch.equal(fast.found.cpu(), eager.found.cpu())
            and torch.equal(fast.offsets.cpu(), eager.offsets.cpu())
            and fast.cache_len == eager.cache_len)
    v_fast = fast.actions.float().cpu() - noise
    v_eager = eager.actions.float().cpu() - noise
    return PathComparison(velocity_max_diff=float((v_fast - v_eager).abs().max()),
                          velocity_max=float(v_eager.abs().max()), same_decode=bool(same))


def _warmup_input(height: int, width: int,
                  camera_indices: Optional[tuple[int, ...]] = None,
                  navigation_text: Optional[str] = None) -> ModelInput:
    """Black frames of (height, width) from the cameras ``camera_indices`` (None: the R1
    rig, unnamed), a straight 5 m/s history and the instruction ``navigation_text``."""
    t = np.asarray(HISTORY_OFFSETS)
    cameras = NUM_CAMERAS if camera_indices is None else len(camera_indices)
    return ModelInput(frames=np.zeros((FRAMES_PER_CAMERA * cameras, height, width, 3),
                                      dtype=np.uint8),
                      history_xyz=np.stack([5.0 * t, np.zeros(NUM_HISTORY), np.zeros(NUM_HISTORY)],
                                           axis=1),
                      history_rot=np.tile(np.eye(3), (NUM_HISTORY, 1, 1)),
                      camera_indices=None if camera_indices is None else tuple(camera_indices),
                      navigation_text=navigation_text)


def _frame_keys(model_input: ModelInput, count: int) -> Optional[tuple]:
    """ModelInput.frame_keys checked: None, or ``count`` hashable keys."""
    keys = getattr(model_input, "frame_keys", None)
    if keys is None:
        return None
    keys = tuple(keys)
    if len(keys) != count:
        raise ModelInputError(f"frame_keys must name all {count} frames, have {len(keys)}")
    try:
        hash(keys)
    except TypeError as exc:
        raise ModelInputError(f"frame_keys must be hashable: {exc}") from exc
    return keys


def _to_numpy(value):
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


class _StageClock:
    """Wall-clock laps into StageTimings fields; when timing, synchronises CUDA so GPU work is
    counted (without timings it does not synchronise)."""

    def __init__(self, device: torch.device, timings: Optional[StageTimings]) -> None:
        self.device = device
        self.timings = timings
        self.start = self._now()

    def _now(self) -> float:
        if self.timings is not None and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def restart(self) -> None:
        self.start = self._now()

    def lap(self, field: str) -> None:
        now = self._now()
        if self.timings is not None:
            setattr(self.timings, field, getattr(self.timings, field) + now - self.start)
        self.start = now
