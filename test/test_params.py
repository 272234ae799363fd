"""The planner parameter schema: validation messages, sync with PlannerConfig, the YAML file
and the generated docs table, and the rclpy declarations."""
import dataclasses
from pathlib import Path

import pytest
import yaml

from alpamayo_ros.core.config import PlannerConfig
from alpamayo_ros.core.errors import ConfigError
from alpamayo_ros.core.types import InferenceOptions
from alpamayo_ros.ros import params as P

ROOT = Path(__file__).resolve().parents[1]
DRY_RUN = {"model.backend": "constant_velocity"}


def _flatten(tree, prefix=""):
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def load_yaml_parameters(path: Path) -> dict:
    """Flat parameter dict of the '/**' section of a ROS 2 params file."""
    doc = yaml.safe_load(path.read_text())
    return _flatten(doc["/**"]["ros__parameters"])


def test_defaults_validate_for_a_dry_run_and_need_a_checkpoint_otherwise():
    values = P.validate(DRY_RUN)
    assert values["camera_indices"] == [0, 1, 2, 6]
    with pytest.raises(ConfigError, match=r"model.checkpoint_dir: have \"\", need"):
        P.validate({})


@pytest.mark.parametrize("override, pattern", [
    ({"rate_hz": 0.0}, r"rate_hz: have 0.0, need >= 0.05"),
    ({"rate_hz": "fast"}, r"rate_hz: have str 'fast', need float"),
    ({"camera_indices": [0, 2, 1, 6]}, r"camera_indices: have \[0, 2, 1, 6\], need strictly"),
    ({"camera_indices": [0, 1, 2, 7]}, r"camera_indices\[3\]: have 7, need <= 6"),
    ({"camera_topics": ["a", "b", "c"]}, r"camera_topics: have 3 entries, need 4"),
    ({"camera_topics": ["a", "a", "c", "d"]}, r"need 4 distinct topics"),
    ({"camera_transports": ["raw", "raw", "h264", "raw"]},
     r"camera_transports\[2\]: have 'h264', need one of raw, compressed"),
    ({"model.device": "gpu"}, r"model.device: have 'gpu', need cpu, cuda or cuda:N"),
    ({"model.num_samples": 0}, r"model.num_samples: have 0, need >= 1"),
    ({"model.sample_coc": 1}, r"model.sample_coc: have int 1, need bool"),
    ({"no.such.parameter": 1}, r"unknown parameter 'no.such.parameter'"),
])
def test_invalid_values_name_have_and_need(override, pattern):
    with pytest.raises(ConfigError, match=pattern):
        P.validate({**DRY_RUN, **override})


def test_core_block_names_exactly_the_planner_config_fields_with_its_defaults():
    fields = {f.name: f.default for f in dataclasses.fields(PlannerConfig)}
    core = {s.name[len(P.CORE_PREFIX):]: s.default for s in P.PLANNER_PARAMETERS
            if s.name.startswith(P.CORE_PREFIX)}
    assert set(core) == set(fields) - {"camera_indices"}
    # The ROS-level defaults are the core defaults, written the ROS way.
    config = PlannerConfig.from_dict(P.core_config_values(P.validate(DRY_RUN)))
    assert config == PlannerConfig()


def test_model_defaults_equal_the_inference_api_defaults():
    assert P.inference_options(P.validate(DRY_RUN)) == InferenceOptions()
    unseeded = P.inference_options(P.validate({**DRY_RUN, "model.seed": -1}))
    assert unseeded.seed is None


def test_planner_yaml_sets_every_parameter_and_validates():
    values = load_yaml_parameters(ROOT / "config" / "planner.yaml")
    assert set(values) == set(P.PARAMETERS_BY_NAME)
    # The shipped file names the real model; a checkpoint is supplied at launch.
    assert values["model.backend"] == "alpamayo"
    P.validate({**values, "model.checkpoint_dir": "/some/checkpoint"})


def test_docs_table_is_generated_from_the_schema():
    text = (ROOT / "docs" / "parameters.md").read_text()
    assert P.render_docs_section() in text, \
        "docs/parameters.md is out of date: run python -m alpamayo_ros.ros.params --write-docs"
    for spec in P.PLANNER_PARAMETERS:
        assert f"`{spec.name}`" in text


def test_update_docs_rewrites_only_the_generated_section(tmp_path):
    doc = tmp_path / "p.md"
    doc.write_text(f"intro\n{P.DOCS_BEGIN}\nstale\n{P.DOCS_END}\noutro\n")
    assert P.update_docs(doc) is True
    text = doc.read_text()
    assert text.startswith("intro\n") and text.endswith("outro\n") and "stale" not in text
    assert P.update_docs(doc) is False


def test_declare_and_read_on_an_rclpy_node():
    rclpy = pytest.importorskip("rclpy")
    from rclpy.parameter import Parameter

    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        node = rclpy.create_node("params_test", context=context, parameter_overrides=[
            Parameter("model.backend", value="constant_velocity"),
            Parameter("rate_hz", value=5.0)])
        values = P.declare_and_read(node)
        assert values["rate_hz"] == 5.0
        descriptor = node.describe_parameter("rate_hz")
        assert descriptor.floating_point_range[0].from_value == pytest.approx(0.05)
        assert "Planning rate" in descriptor.description
        node.destroy_node()

        bad = rclpy.create_node("params_test_bad", context=context, parameter_overrides=[
            Parameter("model.backend", value="constant_velocity"),
            Parameter("rate_hz", value=500.0),
            Parameter("model.num_samples", value=2.5)])
        with pytest.raises(ConfigError) as info:
            P.declare_and_read(bad)
        message = str(info.value)
        assert "rate_hz: have 500.0, need [0.05, 50.0]" in message
        assert "model.num_samples: have a value of the wrong type, need int" in message
        bad.destroy_node()
    finally:
        rclpy.shutdown(context=context)


def test_declare_and_read_with_a_one_sided_bound():
    """A spec with only a minimum declares (no ROS range) and is still checked."""
    rclpy = pytest.importorskip("rclpy")
    from rclpy.parameter import Parameter

    specs = (P.ParamSpec("count", P.INT, 1, "A count.", minimum=0),
             P.ParamSpec("gain", P.FLOAT, 1.0, "A gain.", maximum=5.0))
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        node = rclpy.create_node("params_one_sided", context=context)
        assert P.declare_and_read(node, specs) == {"count": 1, "gain": 1.0}
        node.destroy_node()
        bad = rclpy.create_node("params_one_sided_bad", context=context, parameter_overrides=[
            Parameter("count", value=-1), Parameter("gain", value=7.0)])
        with pytest.raises(ConfigError) as info:
            P.declare_and_read(bad, specs)
        assert "count: have -1, need >= 0" in str(info.value)
        assert "gain: have 7.0, need <= 5.0" in str(info.value)
        bad.destroy_node()
    finally:
        rclpy.shutdown(context=context)
