"""AlpamayoRuntime: the single inference API (PlannerModel) of the node, replay and benches.

One ``predict`` call: validate the input, preprocess the 16 frames and build the prompt,
prefill the VLM once (batch 1), decode the reasoning for N sample rows with a shared KV
cache, integrate the flow-matching expert, and turn the actions into t0-frame waypoints at
t0 + 0.1 .. 6.4 s. Everything loads from local directories (see docs/model.md).

Two paths compute the same outputs. The *fast* path (``fast_path=True``, the default;
``fast_path.py``) keeps a static KV cache per sample-row count, replays the decode and
flow-matching steps as CUDA graphs on CUDA, samples without host syncs and reuses the
vision features of frames seen in the previous call when the input names its frames
(``ModelInput.frame_keys``). The *eager* path (``generation.py``) is the reference it is
tested against. ``warmup`` captures the graphs before the first real call.
"""
from __future__ import annotations

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
from alpamayo_ros.core.model_input import MIN_FRAME_SIDE, validate_model_input
from alpamayo_ros.core.types import (NUM_WAYPOINTS, InferenceOptions, ModelInput, ModelOutput,
                                     StageTimings, TrajectorySample)
from alpamayo_ros.model import generation
from alpamayo_ros.model.cuda_graphs import LOG, OnceLog
from alpamayo_ros.model.fast_path import FastEngine, FastPathConfig
from alpamayo_ros.model.checkpoint import (compute_model_id, locate_checkpoint,
                                           resolve_processor_dir)
from alpamayo_ros.model.modeling import AlpamayoR1Network, default_device_dtype, load_network

_ATTN_CHOICES = ("sdpa", "eager", "flash_attention_2")
PATHS = ("fast", "eager")


@dataclass
class PreparedInputs:
    """Model-ready tensors of one ModelInput (all on the runtime device).

    pixel_values: (frames * patches, 1536) float32 patches of the frames in
    ``encoded_frames`` (all 16 when that is None); image_grid_thw: (16, 3) int64 of all
    frames; input_ids: (1, L) int64 prompt with fused history tokens;
    history_xyz / history_rot: float32 (16, 3) / (16, 3, 3) in the t0 frame;
    frame_keys: vision-cache keys of the 16 frames (fast path with frame keys only);
    encoded_frames: indices of the frames whose features must be computed (the others are
    in the fast path's vision cache); rope: the prompt's M-RoPE (position_ids (3, 1, L),
    rope_deltas (1, 1)) when known (the fast path computes them otherwise).
    """

    pixel_values: torch.Tensor
    image_grid_thw: torch.Tensor
    input_ids: torch.Tensor
    history_xyz: torch.Tensor
    history_rot: torch.Tensor
    frame_keys: Optional[tuple] = None
    encoded_frames: Optional[tuple[int, ...]] = None
    rope: Optional[tuple[torch.Tensor, torch.Tensor]] = None


@dataclass
class RawPrediction:
    """Tensors of one model call before conversion to ModelOutput.

    actions: (N, 64, 2) normalised actions; tokens: (N, T) generated ids; found: (N,) bool;
    offsets: (N,) expert offsets; rope_deltas: int; cache_len: int; path: "fast" or
    "eager"; decode_steps: language-model steps run by the CoC decode.
    """

    actions: torch.Tensor
    tokens: torch.Tensor
    found: torch.Tensor
    offsets: torch.Tensor
    rope_deltas: int
    cache_len: int
    path: str = "eager"
    decode_steps: int = 0


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
    """Alpamayo-R1 inference on one device; implements core.types.PlannerModel."""

    # Smallest frame side it accepts [px] (one merged vision patch; core.model_input).
    min_frame_side = MIN_FRAME_SIDE

    def __init__(self, network: AlpamayoR1Network, tokenizer, token_ids, image_config,
                 action_space, *, checkpoint_dir: Path, processor_dir: Path, device: torch.device,
                 dtype: torch.dtype, vlm_attn_implementation: str,
                 expert_attn_implementation: str, model_id: str, fast_path: bool = True,
                 fast_path_config: Optional[FastPathConfig] = None) -> None:
        self.network = network
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
        # (image grid, prompt ids before history fusion) of the last call: rendering the chat
        # template and tokenizing the ~3k-token prompt depend on the grid only.
        self._unfused_prompt: Optional[tuple[tuple, torch.Tensor]] = None
        self.fast_path = bool(fast_path)
        self.fast_path_config = fast_path_config or FastPathConfig()
        # Shape changes, captures and fallbacks are logged once each (and kept here).
        self.log = OnceLog()
        self._engine: Optional[FastEngine] = None

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
        return cls(network, tokenizer, token_ids, image_config, action_space,
                   checkpoint_dir=files.checkpoint_dir, processor_dir=proc_dir, device=device,
                   dtype=dtype, vlm_attn_implementation=vlm_attn,
                   expert_attn_implementation=expert_attn, model_id=compute_model_id(files),
                   fast_path=fast_path, fast_path_config=fast_path_config)

    def describe(self) -> dict:
        """Identity and settings of the loaded model."""
        return dict(checkpoint=str(self.checkpoint_dir), processor_dir=str(self.processor_dir),
                    model_id=self.model_id, device=str(self.device),
                    dtype=str(self.dtype).replace("torch.", ""),
                    attn_implementation=self.vlm_attn_implementation,
                    expert_attn_implementation=self.expert_attn_implementation,
                    param_count=self.network.parameter_count(), fast_path=self.fast_path,
                    cuda_graphs=(self.fast_path and self.fast_path_config.cuda_graphs
                                 and self.device.type == "cuda"))

    @property
    def engine(self) -> FastEngine:
        """The fast-path engine (created on first use)."""
        if self._engine is None:
            self._engine = FastEngine(self.network, self.token_ids.traj_future_start,
                                      self.device, self.dtype, self.fast_path_config, self.log)
        return self._engine

    def fast_path_report(self) -> dict:
        """Row states, captured steps, fallbacks, vision reuse counts and the messages
        logged once (shape changes, captures, fallbacks)."""
        if self._engine is None:
            return dict(cuda_graphs=False, states=[], vision={}, messages=list(self.log.messages))
        return self._engine.report()

    def close(self) -> None:
        """Release the weights, caches and captured graphs (a lifecycle cleanup): on CUDA
        the memory goes back to the device. The runtime cannot predict afterwards."""
        with self._predict_lock:
            self._engine = None
            self._pixel_buffer = None
            self._unfused_prompt = None
            self.network = None
            gc.collect()
            if self.device.type == "cuda":
                torch.cuda.empty_cache()

    def clear_vision_cache(self) -> None:
        """Forget the vision features of earlier frames (e.g. after a clock jump, when frame
        keys may be reused for other images)."""
        if self._engine is not None:
            self._engine.clear_vision_cache()

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
        height, width = (int(v) for v in frames[0].shape[:2])
        keys = encoded = None
        if frame_keys is not None and self.fast_path:
            keys = tuple((key, height, width) for key in frame_keys)
            encoded = tuple(self.engine.missing_frames(keys))
        pixel_values = self._pixels(frames, encoded)
        grid = image_grid_thw(len(frames), height, width, self.image_config)
        input_ids = fuse_history_tokens(self._unfused_prompt_for(grid), self.token_ids,
                                        model_input.history_xyz).to(self.device)
        return PreparedInputs(
            pixel_values=pixel_values, image_grid_thw=grid.to(self.device), input_ids=input_ids,
            history_xyz=torch.as_tensor(model_input.history_xyz, dtype=torch.float32),
            history_rot=torch.as_tensor(model_input.history_rot, dtype=torch.float32),
            frame_keys=keys, encoded_frames=encoded, rope=self._unfused_prompt[2])

    def _unfused_prompt_for(self, grid: torch.Tensor) -> torch.Tensor:
        """(1, L) CPU prompt ids with the history placeholders still in (prompt.
        build_unfused_input_ids), built again only when the (CPU) image grid changes.

        Also keeps the prompt's M-RoPE ids: they depend only on where the image tokens are
        and on the grid (Qwen3VLModel.get_rope_index), not on the fused history tokens, so
        the fast path skips recomputing them (a Python loop with host syncs) every call.
        """
        from alpamayo_ros.model.prompt import build_unfused_input_ids

        key = tuple(grid.flatten().tolist())
        if self._unfused_prompt is None or self._unfused_prompt[0] != key:
            ids = build_unfused_input_ids(self.tokenizer, self.token_ids, grid.cpu(),
                                          merge_size=self.image_config.merge_size)
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
                     generator: Optional[torch.Generator] = None,
                     forced_tokens: Optional[torch.Tensor] = None,
                     timings: Optional[StageTimings] = None,
                     path: Optional[str] = None) -> RawPrediction:
        """Prefill, CoC decode and flow matching on prepared inputs.

        forced_tokens: (T,) ids fed instead of sampled ones (teacher forcing, for checks).
        timings: filled with vision_prefill / coc_decode / diffusion seconds when given.
        path: "fast" or "eager" (default: the runtime's choice). generator: the eager
        path's random source; the fast path re-seeds its own persistent generator with
        options.seed (same seed, same outputs on each path; the two paths draw differently).
        """
        path = path or ("fast" if self.fast_path else "eager")
        if path not in PATHS:
            raise ConfigError(f"path must be one of {PATHS}, have {path!r}")
        if path == "fast":
            return self._run_fast(prepared, options, initial_noise, forced_tokens, timings)
        if prepared.encoded_frames is not None and (
                len(prepared.encoded_frames) != prepared.image_grid_thw.shape[0]):
            raise ModelRuntimeError("the eager path needs the patches of every frame: prepare "
                                    "the input without frame keys")
        net, ids, rows = self.network, self.token_ids, int(options.num_samples)
        noise = self._initial_noise(initial_noise, rows)
        prompt_len = int(prepared.input_ids.shape[1])
        capacity = prompt_len + int(options.max_coc_tokens) + NUM_WAYPOINTS
        cache = generation.PreallocatedKVCache(net.num_layers, capacity, rows)
        clock = _StageClock(self.device, timings)
        prefilled = generation.prefill(net, prepared.input_ids,
                                       prepared.pixel_values.to(self.dtype),
                                       prepared.image_grid_thw, cache)
        clock.lap("vision_prefill")
        settings = generation.DecodeSettings(
            traj_future_start=ids.traj_future_start, banned_start=ids.traj_token_start,
            banned_stop=ids.traj_token_end, max_new_tokens=int(options.max_coc_tokens),
            sample=bool(options.sample_coc), temperature=float(options.temperature),
            top_p=float(options.top_p))
        decoded = generation.decode_coc(net, cache, prefilled, settings, rows, generator,
                                        forced_tokens)
        clock.lap("coc_decode")
        if noise is None:
            noise = torch.randn((rows, NUM_WAYPOINTS, 2), generator=generator,
                                device=self.device, dtype=torch.float32)
        actions = generation.sample_actions(net, cache, decoded.cache_len, decoded.offsets,
                                            prefilled.rope_deltas, noise,
                                            int(options.diffusion_steps))
        clock.lap("diffusion")
        return RawPrediction(actions, decoded.tokens, decoded.found, decoded.offsets,
                             prefilled.rope_deltas, decoded.cache_len, path="eager",
                             decode_steps=decoded.cache_len - prompt_len)

    def _chooser(self, options: InferenceOptions):
        from alpamayo_ros.model.sampling import TokenChooser

        ids = self.token_ids
        return TokenChooser(ids.traj_token_start, ids.traj_token_end, bool(options.sample_coc),
                            float(options.temperature), float(options.top_p))

    def _run_fast(self, prepared: PreparedInputs, options: InferenceOptions, initial_noise,
                  forced_tokens: Optional[torch.Tensor],
                  timings: Optional[StageTimings]) -> RawPrediction:
        rows = int(options.num_samples)
        noise = self._initial_noise(initial_noise, rows)
        clock = _StageClock(self.device, timings)
        fields = {"vision": "vision_prefill", "prefill": "vision_prefill",
                  "coc_decode": "coc_decode", "diffusion": "diffusion"}
        encoded = prepared.encoded_frames
        if encoded is None:
            encoded = tuple(range(prepared.image_grid_thw.shape[0]))
        result = self.engine.run(
            prepared.input_ids, prepared.image_grid_thw, prepared.pixel_values, encoded,
            prepared.frame_keys, rows, self._chooser(options), int(options.max_coc_tokens),
            int(options.diffusion_steps), options.seed, noise, forced_tokens,
            lap=lambda stage: clock.lap(fields[stage]), rope=prepared.rope)
        return RawPrediction(result.actions, result.tokens, result.found, result.offsets,
                             result.rope_deltas, result.cache_len, path="fast",
                             decode_steps=result.decode_steps)

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

    def make_generator(self, seed: Optional[int]) -> Optional[torch.Generator]:
        """Torch generator on the runtime device seeded with ``seed`` (None: global RNG)."""
        if seed is None:
            return None
        return torch.Generator(device=self.device).manual_seed(int(seed))

    # ------------------------------------------------------------------ API
    def predict(self, model_input: ModelInput, options: InferenceOptions = InferenceOptions(),
                initial_noise: Optional[np.ndarray] = None) -> ModelOutput:
        """Plan from 16 frames and 16 history poses (see core.types.ModelInput).

        initial_noise: optional (num_samples, 64, 2) flow-matching start x (t = 0); by
        default it is drawn from the seeded generator after the CoC decode.
        With the fast path, ``model_input.frame_keys`` lets frames seen in the previous call
        skip preprocessing and the vision encoder.
        """
        timings = StageTimings()
        clock = _StageClock(self.device, timings)
        try:
            with self._predict_lock, torch.inference_mode():
                checked = validate_model_input(model_input)
                prepared = self.prepare_inputs(
                    checked, _frame_keys(model_input, len(checked.frames)))
                v0 = float(self.action_space.estimate_v0(prepared.history_xyz,
                                                         prepared.history_rot))
                clock.lap("preprocess")
                raw = self.run_prepared(prepared, options, initial_noise,
                                        self.make_generator(options.seed), timings=timings)
                clock.restart()
                samples = self.to_samples(raw, prepared, v0)
                clock.lap("postprocess")
        except AlpamayoError:
            raise
        except RuntimeError as exc:  # torch failures, CUDA out of memory, ...
            raise ModelRuntimeError(f"model failed during predict "
                                    f"({type(exc).__name__}): {exc}") from exc
        return ModelOutput(samples=samples, v0=v0, timings=timings, model_id=self.model_id)

    def warmup(self, options: InferenceOptions = InferenceOptions(),
               frame_shape: tuple[int, int] = (1080, 1920)) -> float:
        """Prepare for serving calls like ``options`` with frames of ``frame_shape`` (H, W).

        Runs one call on synthetic frames with a two-token forced CoC: allocates the static
        KV cache for options.num_samples rows and the caching allocator's blocks, and
        captures the decode and flow-matching steps as CUDA graphs (fast path on CUDA).
        Later calls with other shapes still work: they allocate or capture what they need
        and say so once. Returns the seconds it took (also logged).
        """
        height, width = (int(v) for v in frame_shape)
        start = time.perf_counter()
        t = np.linspace(-1.5, 0.0, 16)
        model_input = ModelInput(
            frames=np.zeros((16, height, width, 3), dtype=np.uint8),
            history_xyz=np.stack([5.0 * t, np.zeros(16), np.zeros(16)], axis=1),
            history_rot=np.tile(np.eye(3), (16, 1, 1)))
        forced = torch.tensor([self.token_ids.cot_end, self.token_ids.traj_future_start])
        try:
            with self._predict_lock, torch.inference_mode():
                prepared = self.prepare_inputs(validate_model_input(model_input))
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

    def to_samples(self, raw: RawPrediction, prepared: PreparedInputs,
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
