"""PlannerConfig validation and from_dict."""
import pytest

from alpamayo_ros.core.config import PlannerConfig
from alpamayo_ros.core.errors import ConfigError


def test_defaults_are_valid_and_round_trip():
    config = PlannerConfig()
    assert config.camera_indices == (0, 1, 2, 6)
    assert config.slot_names[3] == "front_tele_30fov"
    assert PlannerConfig.from_dict(config.to_dict()) == config


def test_from_dict_accepts_lists_and_zero_size():
    config = PlannerConfig.from_dict({"camera_indices": [0, 1, 2, 6],
                                      "base_offset_xyz": [-1.4, 0, -0.5],
                                      "output_image_size": [0, 0],
                                      "decode_cache_size": 64.0})
    assert config.base_offset_xyz == (-1.4, 0, -0.5)
    assert config.output_image_size is None
    assert config.decode_cache_size == 64
    resized = PlannerConfig.from_dict({"output_image_size": [640, 360]})
    assert resized.output_image_size == (640, 360)


def test_unknown_keys_rejected_unless_allowed():
    with pytest.raises(ConfigError, match=r"unknown planner parameters \['camera_topics'\]"):
        PlannerConfig.from_dict({"camera_topics": ["/a"]})
    config = PlannerConfig.from_dict({"camera_topics": ["/a"], "frame_tolerance": 0.05},
                                     allow_unknown=True)
    assert config.frame_tolerance == 0.05


@pytest.mark.parametrize("kwargs,message", [
    ({"camera_indices": (0, 2, 1, 6)}, "ascending and unique"),
    ({"camera_indices": tuple(range(7)) + (6,)}, "camera_indices: have 8 entries, need 1 to 7"),
    ({"camera_names": ("a", "b")}, r"camera_names: have 2 names, need one per camera index \(4\)"),
    ({"frame_tolerance": 0.0}, r"frame_tolerance: have 0.0, need >= 0.001"),
    ({"max_extrapolation": -0.1}, r"max_extrapolation: have -0.1, need >= 0.0"),
    ({"buffer_duration": 0.3}, r"buffer_duration: have 0.3, need >= 0.31"),
    ({"buffer_duration": 0.5, "frame_tolerance": 0.5}, r"have 0.5 s, need >= 0.800 s"),
    ({"odometry_buffer_duration": 1.0}, r"odometry_buffer_duration: have 1.0, need >= 1.51"),
    ({"odometry_buffer_duration": 1.8, "max_odometry_gap": 0.5},
     r"have 1.8 s, need >= 2.000 s"),
    ({"interpolation": "cubic"}, "interpolation: have 'cubic', need one of spline, linear"),
    ({"decode_cache_size": 8}, "decode_cache_size: have 8, need >= 16"),
    ({"decode_cache_size": 20.5}, "decode_cache_size: have float 20.5, need int"),
    ({"base_offset_rpy": (0.0, float("nan"), 0.0)},
     r"base_offset_rpy\[1\]: have nan, need a finite number"),
    ({"output_image_size": (10, 10)}, "output_image_size must be"),
    ({"output_image_size": 640}, r"output_image_size must be .*have 640"),
    ({"output_image_size": (640.5, 360)}, r"whole pixels .*have \(640.5, 360\)"),
])
def test_invalid_values_raise_config_error(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        PlannerConfig(**kwargs)


def test_config_error_is_a_value_error():
    with pytest.raises(ValueError):
        PlannerConfig(time_jump_tolerance=-1.0)
