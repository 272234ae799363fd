"""Any camera rig for Alpamayo 1.5 (1 to 7 cameras), exactly 4 for R1 (issue 16 item 3):
the family's rule, the parameters, the planner core's buffers, selection and model input,
and the refusal at configure (model.backends.load_model) before any weight is read."""
import numpy as np
import pytest

from alpamayo_ros.core.config import PlannerConfig
from alpamayo_ros.core.errors import ConfigError
from alpamayo_ros.core.kinematic_model import ConstantVelocityModel
from alpamayo_ros.core.model_family import (ALPAMAYO_1_5, FAMILIES, R1, camera_display_name,
                                            check_camera_rig)
from alpamayo_ros.core.planner_core import PlannerCore, PlanStatus
from alpamayo_ros.core.planner_params import planner_config, validate_parameters
from core_scenarios import Scenario, now_ns


@pytest.mark.parametrize("cameras", [(1,), (1, 6), (0, 1, 2, 6), (0, 1, 2, 3, 4, 5, 6)])
def test_1_5_takes_any_rig_r1_only_its_own(cameras):
    check_camera_rig(FAMILIES[ALPAMAYO_1_5], cameras)
    if cameras == FAMILIES[R1].fixed_cameras:
        check_camera_rig(FAMILIES[R1], cameras)
    else:
        with pytest.raises(ConfigError, match=r"takes exactly the cameras \[0, 1, 2, 6\]"):
            check_camera_rig(FAMILIES[R1], cameras)


@pytest.mark.parametrize("cameras,message", [
    ((1, 1), r"repeat \[1\]"),
    ((0, 1, 2, 3, 4, 5, 6, 6), r"repeat \[6\]"),
    ((), "have 0 cameras"),
    ((1, 9), r"\[9\] are not camera ids"),
])
def test_bad_rigs_are_refused_with_the_reason(cameras, message):
    with pytest.raises(ConfigError, match=message):
        check_camera_rig(FAMILIES[ALPAMAYO_1_5], cameras)


def test_display_names_are_the_official_ones():
    assert camera_display_name(6) == "Front telephoto camera"
    assert camera_display_name(9) == "Camera 9"


def _values(cameras, **extra):
    topics = [f"cam{i}/image" for i in cameras]
    return {"camera_indices": list(cameras), "camera_topics": topics,
            "camera_transports": ["raw"] * len(cameras), "model.backend": "constant_velocity",
            **extra}


@pytest.mark.parametrize("cameras", [(1,), (1, 6), (0, 1, 2, 3, 4, 5, 6)])
def test_parameters_follow_the_rig(cameras):
    config = planner_config(validate_parameters(_values(cameras)))
    assert config.camera_indices == cameras and len(config.slot_names) == len(cameras)


@pytest.mark.parametrize("change,message", [
    ({"camera_topics": ["a", "b", "c"]}, "camera_topics: have 3 entries, need one per "
                                         r"camera_indices entry \(2\)"),
    ({"camera_transports": ["raw"]}, "camera_transports: have 1 entries"),
    ({"camera_indices": [6, 1]}, "need strictly ascending"),
    ({"camera_indices": [1, 1]}, "need strictly ascending"),
    ({"camera_indices": [0, 1, 2, 3, 4, 5, 6, 6]}, "have 8 entries, need 1 to 7"),
])
def test_mismatched_rig_parameters_are_refused(change, message):
    with pytest.raises(ConfigError, match=message):
        validate_parameters({**_values((1, 6)), **change})


def test_camera_names_must_name_every_camera():
    with pytest.raises(ConfigError, match="camera_names: have 3 names, need one per camera"):
        PlannerConfig(camera_indices=(1, 6), camera_names=("a", "b", "c"))


class RecordingModel(ConstantVelocityModel):
    """Keeps the ModelInputs it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.inputs = []

    def predict(self, model_input, options=None, initial_noise=None):
        self.inputs.append(model_input)
        return super().predict(model_input, options, initial_noise)


@pytest.mark.parametrize("cameras", [(6,), (1, 6), (0, 1, 2, 3, 4, 5, 6)])
def test_planner_core_buffers_selects_and_feeds_the_rig(cameras):
    count = len(cameras)
    scenario = Scenario(camera_rates=(10.0,) * count,
                        camera_phases=tuple(0.01 * k for k in range(count)))
    model = RecordingModel()
    core = PlannerCore(PlannerConfig(camera_indices=cameras), model)
    scenario.advance(core, 3.0)
    result = core.tick(now_ns(3.02))
    assert result.status == PlanStatus.OK, result.reason
    assert result.frame_stamps_ns.shape == (4 * count,)
    assert result.t0_ns == now_ns(2.91 if count > 1 else 3.0)  # the oldest newest frame
    fed = model.inputs[-1]
    assert len(fed.frames) == 4 * count and fed.camera_indices == cameras
    # camera-major: the frames of slot k are its 4 newest stamps up to t0
    stamps = result.frame_stamps_ns.reshape(count, 4)
    assert np.all(np.diff(stamps, axis=1) > 0)
    assert core.add_image(count, now_ns(3.1), scenario.image(0, now_ns(3.1))).reason.startswith(
        f"camera slot {count} out of range 0..{count - 1}")


def test_configure_refuses_a_rig_the_checkpoint_family_cannot_take(tmp_path, monkeypatch):
    """The R1 tiny checkpoint with 2 cameras: refused with the reason before any weight
    or tokenizer is read; the 1.5 one loads and warms up for the same rig."""
    pytest.importorskip("torch")
    from alpamayo_ros.core.planner_params import inference_options
    from alpamayo_ros.model import checkpoint as checkpoint_module
    from alpamayo_ros.model.backends import load_model
    from alpamayo_ros.model.tiny_checkpoint import write_tiny_checkpoint

    r1 = write_tiny_checkpoint(tmp_path / "r1", family="r1")
    v15 = write_tiny_checkpoint(tmp_path / "v15", family="1.5")
    values = validate_parameters(_values((1, 6), **{"model.backend": "alpamayo",
                                                    "model.device": "cpu",
                                                    "model.checkpoint_dir": str(r1)}))

    def no_weights(*args, **kwargs):
        raise AssertionError("weights read before the rig check")

    with monkeypatch.context() as patch:
        patch.setattr(checkpoint_module, "locate_checkpoint", no_weights)
        with pytest.raises(ConfigError, match=r"camera_indices \[1, 6\] do not fit an "
                                              r"Alpamayo R1 checkpoint"):
            load_model(values, inference_options(values))
    values["model.checkpoint_dir"] = str(v15)
    model, description = load_model(values, inference_options(values))
    assert description.family == ALPAMAYO_1_5
    assert model.warmup(description.options, (64, 96), camera_indices=(1, 6)) > 0
