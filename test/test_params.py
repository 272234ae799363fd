"""The planner parameter schema: validation messages, sync with PlannerConfig and
InferenceOptions, the YAML file, parameter-file normalisation, the generated docs table,
and the rclpy declarations."""
import dataclasses
from pathlib import Path

import pytest
import yaml

from alpamayo_ros.core import param_schema as S
from alpamayo_ros.core import planner_params as P
from alpamayo_ros.core.config import PlannerConfig
from alpamayo_ros.core.errors import ConfigError
from alpamayo_ros.core.parameter_file import normalised_parameter_file, read_parameter_file
from alpamayo_ros.core.types import InferenceOptions
from alpamayo_ros.ros import params as RP

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
    values = P.validate_parameters(DRY_RUN)
    assert values["camera_indices"] == [0, 1, 2, 6]
    with pytest.raises(ConfigError, match=r"model.checkpoint_dir: have \"\", need"):
        P.validate_parameters({})


@pytest.mark.parametrize("override, pattern", [
    ({"rate_hz": 0.0}, r"rate_hz: have 0.0, need >= 0.05"),
    ({"rate_hz": "fast"}, r"rate_hz: have str 'fast', need float"),
    ({"camera_indices": [0, 2, 1, 6]}, r"camera_indices: have \[0, 2, 1, 6\], need strictly"),
    ({"camera_indices": [0, 1, 2, 7]}, r"camera_indices\[3\]: have 7, need <= 6"),
    ({"camera_topics": ["a", "b", "c"]},
     r"camera_topics: have 3 entries, need one per camera_indices entry \(4\)"),
    ({"camera_topics": ["a", "a", "c", "d"]}, r"need 4 distinct topics"),
    ({"camera_transports": ["raw", "raw", "h264", "raw"]},
     r"camera_transports\[2\]: have 'h264', need one of raw, compressed"),
    ({"model.device": "gpu"}, r"model.device: have 'gpu', need cpu, cuda or cuda:N"),
    ({"model.num_samples": 0}, r"model.num_samples: have 0, need >= 1"),
    ({"model.sample_coc": 1}, r"model.sample_coc: have int 1, need bool"),
    ({"no.such.parameter": 1}, r"unknown parameter 'no.such.parameter'"),
    ({"core.frame_tolerence": 0.2},
     r"unknown parameter 'core.frame_tolerence' \(did you mean 'core.frame_tolerance'\?\)"),
])
def test_invalid_values_name_have_and_need(override, pattern):
    with pytest.raises(ConfigError, match=pattern):
        P.validate_parameters({**DRY_RUN, **override})


def test_ints_are_accepted_where_floats_are_declared():
    values = P.validate_parameters({**DRY_RUN, "rate_hz": 2,
                                    "core.base_offset_xyz": [-1.4, 0, 0]})
    assert values["rate_hz"] == 2.0 and isinstance(values["rate_hz"], float)
    assert values["core.base_offset_xyz"] == [-1.4, 0.0, 0.0]
    assert all(isinstance(v, float) for v in values["core.base_offset_xyz"])
    with pytest.raises(ConfigError, match=r"rate_hz: have bool True, need float"):
        P.validate_parameters({**DRY_RUN, "rate_hz": True})


def test_settings_types_validate_themselves_by_the_table():
    """PlannerConfig and InferenceOptions check the table's ranges, not their own."""
    spec = P.PARAMETERS_BY_NAME["model.num_samples"]
    with pytest.raises(ConfigError, match=rf"num_samples: have {int(spec.maximum) + 1}, "
                                          rf"need <= {int(spec.maximum)}"):
        InferenceOptions(num_samples=int(spec.maximum) + 1)
    with pytest.raises(ConfigError, match=r"top_p: have 0.0, need >= 0.01"):
        InferenceOptions(top_p=0.0)
    assert InferenceOptions(seed=None).seed is None
    spec = P.PARAMETERS_BY_NAME["core.frame_tolerance"]
    with pytest.raises(ConfigError, match=rf"frame_tolerance: have 0.0, need >= "
                                          rf"{spec.minimum}"):
        PlannerConfig(frame_tolerance=0.0)


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_parameter_file_sections_and_normalisation(tmp_path):
    path = _write(tmp_path / "p.yaml", """
/**:
  ros__parameters:
    use_sim_time: true
    rate_hz: 2
alpamayo_planner:
  ros__parameters:
    core:
      base_offset_xyz: [-1.4, 0, 0]
other_node:
  ros__parameters:
    whatever: [1, 2.5]
""")
    flat = read_parameter_file(path, P.NODE_NAME)
    assert flat == {"use_sim_time": True, "rate_hz": 2, "core.base_offset_xyz": [-1.4, 0, 0]}
    text = normalised_parameter_file(path, P.NODE_NAME, P.PLANNER_PARAMETERS)
    doc = yaml.safe_load(text)
    assert doc["/**"]["ros__parameters"]["rate_hz"] == 2.0
    assert isinstance(doc["/**"]["ros__parameters"]["rate_hz"], float)
    assert doc["alpamayo_planner"]["ros__parameters"]["core"]["base_offset_xyz"] == \
        [-1.4, 0.0, 0.0]
    assert doc["other_node"]["ros__parameters"]["whatever"] == [1, 2.5]  # not ours: as is
    assert normalised_parameter_file(ROOT / "config" / "planner.yaml", P.NODE_NAME,
                                     P.PLANNER_PARAMETERS) is None  # nothing to change


def test_parameter_file_with_a_typo_names_the_closest_parameter(tmp_path):
    path = _write(tmp_path / "p.yaml", """
/alpamayo_planner:
  ros__parameters:
    core.frame_tolerence: 0.2
""")
    with pytest.raises(ConfigError, match=r"unknown parameter 'core.frame_tolerence' "
                                          r"\(did you mean 'core.frame_tolerance'\?\)"):
        normalised_parameter_file(path, P.NODE_NAME, P.PLANNER_PARAMETERS)
    args = RP.normalise_parameter_files(["x", "--ros-args", "-p", "a:=1"], P.NODE_NAME)
    assert args == ["x", "--ros-args", "-p", "a:=1"]


def test_normalise_parameter_files_replaces_only_files_that_need_it(tmp_path):
    fine = ROOT / "config" / "planner.yaml"
    ints = _write(tmp_path / "ints.yaml", "/**:\n  ros__parameters:\n    rate_hz: 4\n")
    args = RP.normalise_parameter_files(["--ros-args", "--params-file", str(fine),
                                         "--params-file", str(ints)], P.NODE_NAME)
    assert args[2] == str(fine) and args[4] != str(ints)
    assert yaml.safe_load(Path(args[4]).read_text())["/**"]["ros__parameters"]["rate_hz"] == 4.0
    Path(args[4]).unlink()


def test_core_block_names_exactly_the_planner_config_fields_with_its_defaults():
    fields = {f.name: f.default for f in dataclasses.fields(PlannerConfig)}
    core = {s.name[len(P.CORE_PREFIX):]: s.default for s in P.PLANNER_PARAMETERS
            if s.name.startswith(P.CORE_PREFIX)}
    assert set(core) == set(fields) - {"camera_indices"}
    # The ROS-level defaults are the core defaults, written the ROS way.
    config = PlannerConfig.from_dict(P.core_config_values(P.validate_parameters(DRY_RUN)))
    assert config == PlannerConfig()


def test_model_defaults_equal_the_inference_api_defaults():
    assert P.inference_options(P.validate_parameters(DRY_RUN)) == InferenceOptions()
    unseeded = P.inference_options(P.validate_parameters({**DRY_RUN, "model.seed": -1}))
    assert unseeded.seed is None


def test_planner_yaml_sets_every_parameter_and_validates():
    values = load_yaml_parameters(ROOT / "config" / "planner.yaml")
    assert set(values) == set(P.PARAMETERS_BY_NAME)
    # The shipped file names the real model; a checkpoint is supplied at launch.
    assert values["model.backend"] == "alpamayo"
    P.validate_parameters({**values, "model.checkpoint_dir": "/some/checkpoint"})


def test_docs_table_is_generated_from_the_schema():
    text = (ROOT / "docs" / "parameters.md").read_text()
    begin, end = S.docs_markers(P.DOCS_GENERATOR)
    section = f"{begin}\n{S.render_markdown_table(P.PLANNER_PARAMETERS)}\n{end}"
    assert section in text, f"docs/parameters.md is out of date: run {P.DOCS_GENERATOR}"
    for spec in P.PLANNER_PARAMETERS:
        assert f"`{spec.name}`" in text


def test_update_docs_rewrites_only_the_generated_section(tmp_path):
    doc = tmp_path / "p.md"
    begin, end = S.docs_markers("gen")
    doc.write_text(f"intro\n{begin}\nstale\n{end}\noutro\n")
    assert S.update_docs(doc, P.PLANNER_PARAMETERS, "gen") is True
    text = doc.read_text()
    assert text.startswith("intro\n") and text.endswith("outro\n") and "stale" not in text
    assert S.update_docs(doc, P.PLANNER_PARAMETERS, "gen") is False


def test_declare_and_read_on_an_rclpy_node():
    rclpy = pytest.importorskip("rclpy")
    from rclpy.parameter import Parameter

    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        node = rclpy.create_node("params_test", context=context, parameter_overrides=[
            Parameter("model.backend", value="constant_velocity"),
            Parameter("rate_hz", value=5.0)])
        values = RP.declare_and_read(node)
        assert values["rate_hz"] == 5.0
        node.destroy_node()

        # An integer override of a float parameter (-p rate_hz:=4) is read as a float.
        node = rclpy.create_node("params_test_int", context=context, parameter_overrides=[
            Parameter("model.backend", value="constant_velocity"),
            Parameter("rate_hz", value=4)])
        values = RP.declare_and_read(node)
        assert values["rate_hz"] == 4.0 and isinstance(values["rate_hz"], float)
        descriptor = node.describe_parameter("rate_hz")
        assert descriptor.floating_point_range[0].from_value == pytest.approx(0.05)
        assert "Planning rate" in descriptor.description
        node.destroy_node()

        bad = rclpy.create_node("params_test_bad", context=context, parameter_overrides=[
            Parameter("model.backend", value="constant_velocity"),
            Parameter("rate_hz", value=500.0),
            Parameter("model.num_samples", value=2.5)])
        with pytest.raises(ConfigError) as info:
            RP.declare_and_read(bad)
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

    specs = (S.ParamSpec("count", S.INT, 1, "A count.", minimum=0),
             S.ParamSpec("gain", S.FLOAT, 1.0, "A gain.", maximum=5.0))
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        node = rclpy.create_node("params_one_sided", context=context)
        assert RP.declare_and_read(node, specs) == {"count": 1, "gain": 1.0}
        node.destroy_node()
        bad = rclpy.create_node("params_one_sided_bad", context=context, parameter_overrides=[
            Parameter("count", value=-1), Parameter("gain", value=7.0)])
        with pytest.raises(ConfigError) as info:
            RP.declare_and_read(bad, specs)
        assert "count: have -1, need >= 0" in str(info.value)
        assert "gain: have 7.0, need <= 5.0" in str(info.value)
        bad.destroy_node()
    finally:
        rclpy.shutdown(context=context)


def test_param_literal_keeps_the_type_on_the_command_line():
    """`-p name:=value` literals (launch-less process starts in tools and tests)."""
    assert S.param_literal(True) == "true" and S.param_literal(False) == "false"
    assert S.param_literal("1") == "'1'" and S.param_literal("") == "''"
    assert S.param_literal("it's") == "'it''s'"
    assert S.param_literal([1.5, 2]) == "[1.5,2]" and S.param_literal(("a", "b")) == "['a','b']"
    for value in (True, "true", "1", "", "it's", [1.5, 2.0], ["a", "b"], 3, 0.25):
        assert yaml.safe_load(S.param_literal(value)) == (list(value) if isinstance(
            value, tuple) else value)


def test_model_backends_come_from_one_table():
    """MODEL_BACKEND_TABLE gives model.backend its choices and description, and the loader
    that alpamayo_ros.model.backends.load_model calls for each."""
    import importlib

    from alpamayo_ros.model import backends

    spec = P.PARAMETERS_BY_NAME["model.backend"]
    assert spec.choices == tuple(b.name for b in P.MODEL_BACKEND_TABLE)
    for backend in P.MODEL_BACKEND_TABLE:
        module, _, function = backend.loader.partition(":")
        assert callable(getattr(importlib.import_module(module), function)), backend.name
        assert f"\"{backend.name}\" = {backend.description}" in spec.description
    values = P.validate_parameters(DRY_RUN)
    model, description = backends.load_model(values, InferenceOptions())
    assert description.model_id == model.model_id and description.device == "cpu"
    with pytest.raises(ConfigError, match="model.backend: have 'nope'"):
        backends.load_model({**values, "model.backend": "nope"}, InferenceOptions())
