"""The Alpamayo network (R1 and 1.5): Qwen3-VL VLM + action expert + action projections.

Module names follow the official tensor names so the released safetensors load unchanged:

* ``vlm.*``            transformers' ``Qwen3VLForConditionalGeneration`` (``vlm.model.visual``,
                       ``vlm.model.language_model``, ``vlm.lm_head``), base-VLM geometry with
                       the checkpoint's extended vocabulary.
* ``expert.*``         transformers' ``Qwen3VLTextModel`` built from a copy of the VLM text
                       config with ``expert_cfg`` overrides, without ``embed_tokens``.
* ``action_in_proj.*`` Fourier features of (accel, curvature, t) -> MLP -> LayerNorm.
* ``action_out_proj.*`` Linear(expert hidden, 2): the flow-matching velocity.
* ``action_space.*``   four float buffers (normalisation constants); the maths lives in
                       ``action_space.py``.

The two families differ only in what the checkpoint stores: R1 saves the action-space
constants and the Fourier frequencies as buffers; 1.5 registers them non-persistent, so
they are rebuilt from config.json (``action_space_cfg``, ``action_in_proj_cfg``) after
loading (``_rebuild_non_persistent_buffers``).

The transformer itself is never re-implemented here; only the small projections are.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from alpamayo_ros.core.errors import CheckpointError, ConfigError
from alpamayo_ros.model.checkpoint import (CheckpointFiles, checkpoint_family, load_state_dict,
                                           read_processor_config)

# Keys of expert_cfg that are not Qwen3-VL text-config fields.
_EXPERT_CFG_NON_ARCH_KEYS = ("dtype", "torch_dtype", "_target_")


def build_vlm_config(processor_config: dict, vocab_size: int, attn_implementation: str):
    """Qwen3VLConfig of the base VLM with the checkpoint's extended vocabulary size."""
    from transformers import Qwen3VLConfig

    cfg = copy.deepcopy(processor_config)
    cfg.setdefault("text_config", {})["vocab_size"] = int(vocab_size)
    # attn_implementation as a constructor argument applies to the text and vision configs.
    return Qwen3VLConfig(attn_implementation=attn_implementation,
                         **{k: v for k, v in cfg.items()
                            if k not in ("architectures", "transformers_version")})


def build_expert_config(text_config, expert_cfg: dict, attn_implementation: str = "sdpa"):
    """Copy of the VLM text config with ``expert_cfg`` overrides (hidden, heads, ...).

    The expert inherits the layer count and KV-head layout so that its layer l can attend to
    the VLM's cached keys/values of layer l.
    """
    overrides = {k: v for k, v in expert_cfg.items() if k not in _EXPERT_CFG_NON_ARCH_KEYS}
    config = type(text_config).from_dict({**text_config.to_dict(), **overrides},
                                         attn_implementation=attn_implementation)
    if config.head_dim != text_config.head_dim or (
            config.num_key_value_heads != text_config.num_key_value_heads):
        raise CheckpointError(
            "expert_cfg changes the KV layout (head_dim "
            f"{config.head_dim} vs VLM {text_config.head_dim}, kv heads "
            f"{config.num_key_value_heads} vs {text_config.num_key_value_heads}); the expert "
            "must share the VLM's KV cache layout")
    return config


class FourierFeatures(nn.Module):
    """sqrt(2) * [sin(2 pi f x), cos(2 pi f x)] for a stored row of frequencies f.

    Input (..., 1) -> output (..., 2 * num_freqs) float32. ``freqs`` is a (1, num_freqs)
    buffer, log-spaced 1 .. max_freq, that an R1 checkpoint carries (``persistent``) and a
    1.5 checkpoint does not (rebuilt with ``default_freqs``). It is loaded (or rebuilt) in
    the weights' dtype like every other tensor of the official model (official
    ``from_pretrained(model, dtype=dtype)`` casts all floating tensors), so in bf16 its
    values are bf16-rounded. The angles are computed in float32 all the same: the official
    input is float32 (``x = x.float()``) and float32 * bf16 promotes to float32.
    """

    def __init__(self, num_features: int, max_freq: float, persistent: bool = True) -> None:
        super().__init__()
        self.num_features, self.max_freq = int(num_features), float(max_freq)
        self.register_buffer("freqs", self.default_freqs(), persistent=persistent)

    def default_freqs(self, device=None) -> torch.Tensor:
        """The (1, num_features // 2) frequencies the official constructor builds."""
        half = self.num_features // 2
        return torch.logspace(0.0, math.log10(self.max_freq), half, device=device,
                              dtype=torch.float32)[None, :]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        angles = 2.0 * math.pi * x.float() * self.freqs.float()
        return math.sqrt(2.0) * torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)


class ActionInProjection(nn.Module):
    """Embeds noisy normalised actions (B, 64, 2) and the flow time t (B,) into expert tokens.

    Features: Fourier(accel) ++ Fourier(curvature) ++ Fourier(t) per waypoint (float32),
    then ``encoder.trunk`` = Linear, num_enc_layers x [SiLU, RMSNorm, Linear] in the
    weights' dtype, then LayerNorm in float32. Output (B, 64, expert hidden) float32.
    """

    def __init__(self, out_features: int, hidden_size: int = 512, num_enc_layers: int = 2,
                 num_fourier_feats: int = 20, max_freq: float = 100.0,
                 action_dims: int = 2, persistent_buffers: bool = True) -> None:
        super().__init__()
        self.sinus = nn.ModuleList(
            FourierFeatures(num_fourier_feats, max_freq, persistent_buffers)
            for _ in range(action_dims))
        self.timestep_fourier_encoder = FourierFeatures(num_fourier_feats, max_freq,
                                                        persistent_buffers)
        in_features = num_fourier_feats * (action_dims + 1)
        layers: list[nn.Module] = [nn.Linear(in_features, hidden_size)]
        for index in range(num_enc_layers):
            last = index == num_enc_layers - 1
            layers += [nn.SiLU(), nn.RMSNorm(hidden_size, eps=1e-5),
                       nn.Linear(hidden_size, out_features if last else hidden_size)]
        self.encoder = nn.Module()
        self.encoder.trunk = nn.Sequential(*layers)
        self.norm = nn.LayerNorm(out_features)

    def forward(self, action: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        batch, num_waypoints, _ = action.shape
        feats = [enc(action[..., i:i + 1]) for i, enc in enumerate(self.sinus)]
        t_feats = self.timestep_fourier_encoder(t.reshape(batch, 1, 1))
        feats.append(t_feats.expand(batch, num_waypoints, t_feats.shape[-1]))
        features = torch.cat(feats, dim=-1).to(self.norm.weight.dtype)
        hidden = self.encoder.trunk(features)
        # float32 LayerNorm, as the official run gets it from torch.autocast on CUDA
        # (layer_norm is on autocast's float32 list): the expert then reads float32
        # embeddings. Written out because CPU autocast keeps layer_norm in bf16; a no-op
        # for float32 weights.
        norm = self.norm
        return F.layer_norm(hidden.float(), norm.normalized_shape, norm.weight.float(),
                            norm.bias.float(), norm.eps)


class ActionSpaceBuffers(nn.Module):
    """The four normalisation scalars of the official action space (stored in an R1
    checkpoint, ``persistent``; rebuilt from action_space_cfg for 1.5)."""

    NAMES = ("accel_mean", "accel_std", "curvature_mean", "curvature_std")
    DEFAULTS = (0.0, 1.0, 0.0, 1.0)

    def __init__(self, action_space_cfg: dict, persistent: bool = True) -> None:
        super().__init__()
        for name, value in self.values_from_config(action_space_cfg).items():
            self.register_buffer(name, value, persistent=persistent)

    @classmethod
    def values_from_config(cls, action_space_cfg: dict, device=None) -> dict:
        return {name: torch.tensor(float(action_space_cfg.get(name, default)),
                                   dtype=torch.float32, device=device)
                for name, default in zip(cls.NAMES, cls.DEFAULTS)}


@dataclass(frozen=True)
class NetworkSpec:
    """What the network needs from config.json (official field names)."""

    vocab_size: int
    expert_cfg: dict
    action_in_proj_cfg: dict
    action_space_cfg: dict
    expert_non_causal_attention: bool
    # R1 checkpoints store the action-space constants and Fourier frequencies; 1.5 ones
    # do not (core.model_family.ModelFamily.persistent_buffers).
    persistent_buffers: bool = True

    @classmethod
    def from_checkpoint_config(cls, config: dict) -> "NetworkSpec":
        return cls(vocab_size=int(config["vocab_size"]),
                   persistent_buffers=checkpoint_family(config).persistent_buffers,
                   expert_cfg=dict(config["expert_cfg"]),
                   action_in_proj_cfg=dict(config["action_in_proj_cfg"]),
                   action_space_cfg=dict(config["action_space_cfg"]),
                   expert_non_causal_attention=bool(config.get("expert_non_causal_attention",
                                                               True)))


class AlpamayoR1Network(nn.Module):
    """The whole network of either family; tensor names equal the official checkpoint's."""

    def __init__(self, vlm_config, spec: NetworkSpec, expert_attn_implementation: str = "sdpa"):
        super().__init__()
        from transformers import Qwen3VLForConditionalGeneration, Qwen3VLTextModel

        self.spec = spec
        self.vlm = Qwen3VLForConditionalGeneration(vlm_config)
        self.expert_config = build_expert_config(vlm_config.text_config, spec.expert_cfg,
                                                 expert_attn_implementation)
        self.expert = Qwen3VLTextModel(self.expert_config)
        # The expert reads action embeddings, never token ids.
        self.expert.embed_tokens = None
        proj = spec.action_in_proj_cfg
        self.action_in_proj = ActionInProjection(
            out_features=self.expert_config.hidden_size,
            hidden_size=int(proj.get("hidden_size", 512)),
            num_enc_layers=int(proj.get("num_enc_layers", 2)),
            num_fourier_feats=int(proj.get("num_fourier_feats", 20)),
            max_freq=float(proj.get("max_freq", 100.0)),
            persistent_buffers=spec.persistent_buffers)
        self.action_out_proj = nn.Linear(self.expert_config.hidden_size, 2)
        self.action_space = ActionSpaceBuffers(spec.action_space_cfg, spec.persistent_buffers)

    @property
    def num_layers(self) -> int:
        return self.vlm.config.text_config.num_hidden_layers

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())


def _rebuild_non_persistent_buffers(network: AlpamayoR1Network, device) -> None:
    """Recompute the buffers a checkpoint does not hold after a meta-device build.

    A model built on the meta device (to avoid allocating and initialising 10B parameters
    twice) still holds meta tensors for them: the rotary inverse frequencies (recomputed
    by the transformers rotary classes from the config) and, for a 1.5 checkpoint, the
    Fourier frequencies and action-space constants (from config.json, as the official 1.5
    constructor computes them).
    """
    from transformers.models.qwen3_vl.modeling_qwen3_vl import (
        Qwen3VLTextRotaryEmbedding, Qwen3VLVisionRotaryEmbedding)

    network.vlm.model.language_model.rotary_emb = Qwen3VLTextRotaryEmbedding(
        network.vlm.config.text_config, device=device)
    network.expert.rotary_emb = Qwen3VLTextRotaryEmbedding(network.expert_config, device=device)
    visual = network.vlm.model.visual
    dim = 2 * visual.rotary_pos_emb.inv_freq.shape[0]
    with torch.device(device):
        visual.rotary_pos_emb = Qwen3VLVisionRotaryEmbedding(dim)
    for module in network.modules():
        if isinstance(module, FourierFeatures) and module.freqs.is_meta:
            # In the load dtype (the official constructor runs under from_pretrained's dtype).
            module.freqs = module.default_freqs(device).to(module.freqs.dtype)
    space = network.action_space
    for name, value in ActionSpaceBuffers.values_from_config(network.spec.action_space_cfg,
                                                             device).items():
        if getattr(space, name).is_meta:
            setattr(space, name, value)
    for name, buf in network.named_buffers():
        if buf.is_meta:
            raise CheckpointError(f"buffer {name} was not restored after loading")


def build_meta_network(vlm_config, spec: NetworkSpec, dtype: torch.dtype,
                       expert_attn_implementation: str = "sdpa") -> AlpamayoR1Network:
    """The network with every parameter on the meta device in ``dtype``: no memory and no
    random initialisation for weights that are assigned afterwards. The rotary buffers
    need _rebuild_non_persistent_buffers once the weights are in place."""
    previous_dtype = torch.get_default_dtype()
    try:
        torch.set_default_dtype(dtype)
        with torch.device("meta"):
            return AlpamayoR1Network(vlm_config, spec, expert_attn_implementation)
    finally:
        torch.set_default_dtype(previous_dtype)


def load_network(files: CheckpointFiles, processor_dir, *, device="cpu",
                 dtype: torch.dtype = torch.float32, vlm_attn_implementation: str = "sdpa",
                 expert_attn_implementation: str = "sdpa") -> AlpamayoR1Network:
    """Build the network from a checkpoint and its base-VLM directory and load the weights.

    Missing or unexpected tensor names raise CheckpointError (a few of each are listed).
    The action-space buffers must agree with the config's action_space_cfg constants.
    """
    spec = NetworkSpec.from_checkpoint_config(files.config)
    vlm_config = build_vlm_config(read_processor_config(processor_dir), spec.vocab_size,
                                  vlm_attn_implementation)
    network = build_meta_network(vlm_config, spec, dtype, expert_attn_implementation)
    state = load_state_dict(files, device=device, dtype=None)
    _check_state_names(network, state)
    # The action-space buffers keep their stored dtype: they feed the float32 trajectory
    # integration. Everything else, the Fourier frequencies included, takes the load dtype
    # (see FourierFeatures).
    for key, tensor in state.items():
        if tensor.is_floating_point() and not key.startswith("action_space."):
            state[key] = tensor.to(dtype)
    network.load_state_dict(state, strict=True, assign=True)
    _rebuild_non_persistent_buffers(network, device)
    _check_action_space_buffers(network, spec.action_space_cfg)
    network.eval()
    network.requires_grad_(False)
    return network


def _check_state_names(network: nn.Module, state: dict) -> None:
    expected = set(network.state_dict().keys())
    have = set(state.keys())
    missing = sorted(expected - have)
    unexpected = sorted(have - expected)
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint tensor names do not match the network: {len(missing)} missing "
            f"(e.g. {missing[:4]}), {len(unexpected)} unexpected (e.g. {unexpected[:4]})")
    shapes = network.state_dict()
    wrong = [f"{k}: have {tuple(state[k].shape)}, need {tuple(shapes[k].shape)}"
             for k in sorted(expected) if tuple(state[k].shape) != tuple(shapes[k].shape)]
    if wrong:
        raise CheckpointError(f"{len(wrong)} tensors have the wrong shape: {wrong[:4]}")


def _check_action_space_buffers(network: AlpamayoR1Network, action_space_cfg: dict) -> None:
    for name in ("accel_mean", "accel_std", "curvature_mean", "curvature_std"):
        if name not in action_space_cfg:
            continue
        have = float(getattr(network.action_space, name))
        need = float(action_space_cfg[name])
        if not math.isclose(have, need, rel_tol=1e-5, abs_tol=1e-7):
            raise CheckpointError(
                f"action_space.{name} buffer is {have}, config.json says {need}")


def expert_velocity(network: AlpamayoR1Network, x: torch.Tensor, t: torch.Tensor, cache,
                    position_ids: torch.Tensor, attention_mask: torch.Tensor,
                    prefix_len: int, return_hidden: bool = False):
    """One flow-matching velocity evaluation v(x, t) (B, 64, 2).

    x: (B, 64, 2) normalised noisy actions; t: (B,) flow time in [0, 1);
    cache: the VLM KV cache (prefix_len tokens, B rows), restored to prefix_len on return;
    position_ids: (3, B, 64) M-RoPE ids; attention_mask: (B, 1, 64, prefix_len + 64) additive.
    """
    # The float32 embeddings meet reduced-precision weights only under the official
    # autocast (a no-op inside an engine's own region, and for float32 weights).
    with official_autocast(x.device, network.action_out_proj.weight.dtype):
        embeds = network.action_in_proj(x, t)
        try:
            out = network.expert(inputs_embeds=embeds, position_ids=position_ids,
                                 attention_mask=attention_mask, past_key_values=cache,
                                 use_cache=True)
        finally:
            cache.crop(prefix_len)
        hidden = out.last_hidden_state
        velocity = network.action_out_proj(hidden)
    if return_hidden:
        return velocity, embeds, hidden
    return velocity


def official_autocast(device: torch.device, dtype: torch.dtype):
    """The official reduced-precision numerics: its inference runs inside
    ``torch.autocast(device_type, dtype=dtype)`` (NVlabs/alpamayo
    ``src/alpamayo_r1/test_inference.py``: ``with torch.autocast(args.device.split(":")[0],
    dtype=dtype):`` around ``sample_trajectories_from_data_with_vlm_rollout``).

    What that changes with bf16/fp16 weights: LayerNorm outputs float32 (CUDA autocast's
    float32 list), so the action expert reads float32 embeddings (``action_in_proj.norm``,
    cast explicitly in ActionInProjection so the CPU agrees), keeps a float32 residual
    stream and gets float32 rotary tables (transformers' rotary embedding returns them in
    the dtype of the hidden states); linear layers and SDPA still run in the weights' dtype
    (autocast casts the float32 activations down). The vision encoder's LayerNorms also
    output float32 on CUDA. Disabled for float32 weights, so the float32 path is unchanged.
    The cast cache is off: the steps are captured as CUDA graphs, which must not hold casts
    made outside them.
    """
    enabled = dtype in (torch.bfloat16, torch.float16)
    return torch.autocast(torch.device(device).type, dtype=dtype if enabled else torch.bfloat16,
                          enabled=enabled, cache_enabled=False)


_DTYPE_NAMES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def default_device_dtype(device: str | torch.device,
                         dtype: Optional[torch.dtype | str]) -> torch.dtype:
    """bf16 on CUDA, float32 elsewhere, unless the caller names a dtype.

    dtype may be a torch dtype or a name ("float32", "bfloat16", "float16", or "auto" /
    None for the default), so callers without torch (ROS parameters) can pass a string.
    """
    if isinstance(dtype, str):
        if dtype == "auto":
            dtype = None
        elif dtype in _DTYPE_NAMES:
            dtype = _DTYPE_NAMES[dtype]
        else:
            raise ConfigError(f"dtype: have {dtype!r}, need one of auto, "
                              f"{', '.join(_DTYPE_NAMES)}")
    if dtype is not None:
        return dtype
    return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
