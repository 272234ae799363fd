"""The build and install: executables, share files and messages in the venv install
(scripts/setup_env.sh), the same layout from `colcon build`, and set-up idempotency."""
from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import ros_harness

REPO = ros_harness.REPO_ROOT
PREFIX = ros_harness.venv_prefix()
SITE = Path(next(p for p in sys.path if p.endswith("site-packages") and p.startswith(str(PREFIX))))

# Executable name -> module whose main() it calls (docs/design.md, issue 2).
EXECUTABLES = {
    "planner_node": "alpamayo_ros.ros.planner_node",
    "synthetic_sensors": "alpamayo_ros.testbed.synthetic_sensors_node",
    "replay": "alpamayo_ros.tools.replay",
    "bag_player": "alpamayo_ros.testbed.bag_player_node",
    "make_tiny_checkpoint": "alpamayo_ros.model.tiny_checkpoint",
    "make_scenario_bag": "alpamayo_ros.tools.make_bag",
    "controller_node": "alpamayo_ros.ros.controller_node",
    "carla_sim": "alpamayo_ros.testbed.carla_sim_node",
    "route_oracle": "alpamayo_ros.testbed.route_oracle_node",
    "closed_loop": "alpamayo_ros.tools.closed_loop",
    "route_navigation": "alpamayo_ros.ros.route_navigation_node",
}
# Executables without rclpy that answer --help quickly.
TOOLS = ("replay", "make_tiny_checkpoint", "make_scenario_bag", "closed_loop")
MESSAGES = sorted(p.stem for p in (REPO / "msg").glob("*.msg"))


def clean_env(**extra: str) -> dict[str, str]:
    """Environment for a child that must see only what an install provides."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "AMENT_PREFIX_PATH")}
    env.update(extra)
    return env


def run(cmd, **kw) -> subprocess.CompletedProcess:
    kw.setdefault("env", clean_env())
    kw.setdefault("timeout", 120)
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def module_path(module: str, root: Path) -> Path:
    return root.joinpath(*module.split(".")).with_suffix(".py")


def defines_main(path: Path) -> bool:
    tree = ast.parse(path.read_text())
    return any(isinstance(n, ast.FunctionDef) and n.name == "main" for n in tree.body)


# --------------------------------------------------------------------------- wrappers


@pytest.mark.parametrize("name", sorted(EXECUTABLES))
def test_source_wrapper_calls_the_module_main(name):
    wrapper = REPO / "scripts" / name
    assert os.access(wrapper, os.X_OK), f"{wrapper} is not executable"
    text = wrapper.read_text()
    assert text.startswith("#!/usr/bin/env python3\n")
    assert f"from {EXECUTABLES[name]} import main" in text
    target = module_path(EXECUTABLES[name], REPO)
    assert target.is_file(), f"{name} wraps {EXECUTABLES[name]}, but {target} does not exist"
    assert defines_main(target), f"{target} has no top-level main()"


def test_cmake_installs_every_wrapper_and_every_message():
    cmake = (REPO / "CMakeLists.txt").read_text()
    listed = re.search(r"set\(ALPAMAYO_EXECUTABLES(.*?)\)", cmake, re.S).group(1).split()
    assert sorted(listed) == sorted(EXECUTABLES)
    assert sorted(re.findall(r"msg/(\w+)\.msg", cmake)) == MESSAGES


# --------------------------------------------------------------------------- venv install


def test_venv_install_has_executables_with_this_interpreter():
    for name in EXECUTABLES:
        exe = PREFIX / "lib" / "alpamayo_ros" / name
        assert exe.is_file() and os.access(exe, os.X_OK), f"missing {exe}: run scripts/setup_env.sh"
        shebang = exe.read_text().splitlines()[0]
        assert Path(shebang[2:]).resolve() == Path(sys.executable).resolve(), shebang


def test_venv_install_has_share_files_and_python_package():
    share = PREFIX / "share" / "alpamayo_ros"
    assert (share / "package.xml").read_text() == (REPO / "package.xml").read_text()
    for d in ("launch", "config"):
        src = sorted(p.name for p in (REPO / d).glob("*"))
        assert sorted(p.name for p in (share / d).glob("*")) == src, f"share/alpamayo_ros/{d} differs"
    assert sorted(p.stem for p in (share / "msg").glob("*.msg")) == MESSAGES
    assert (PREFIX / "share/ament_index/resource_index/packages/alpamayo_ros").is_file()
    # Every hand-written module is installed next to the generated msg package.
    installed = SITE / "alpamayo_ros"
    for src in (REPO / "alpamayo_ros").rglob("*.py"):
        dst = installed / src.relative_to(REPO / "alpamayo_ros")
        assert dst.is_file(), f"{dst} not installed: rerun scripts/setup_env.sh"
    assert (installed / "msg" / "_planner_output.py").is_file()


def test_messages_import_from_the_venv_install_without_pythonpath(tmp_path):
    code = (
        "import alpamayo_ros, alpamayo_ros.msg as m\n"
        "print(m.__file__)\n"
        "print(sorted(n for n in dir(m) if not n.startswith('_')))\n"
    )
    res = run([sys.executable, "-c", code], cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    msg_file, names = res.stdout.splitlines()
    assert msg_file.startswith(str(SITE)), msg_file
    assert ast.literal_eval(names) == MESSAGES


@pytest.mark.parametrize("name", TOOLS)
def test_console_shims_run_the_installed_tools(name, tmp_path):
    shim = PREFIX / "bin" / f"alpamayo-{name.replace('_', '-')}"
    assert os.access(shim, os.X_OK), f"missing {shim}: run scripts/setup_env.sh"
    assert str(PREFIX / "lib" / "alpamayo_ros" / name) in shim.read_text()
    res = run([str(shim), "--help"], cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "usage:" in res.stdout


def test_installed_tools_find_the_message_definitions_outside_the_source_tree(tmp_path):
    """The installed bag tools register our messages from <prefix>/share/alpamayo_ros/msg
    (no source tree, no PYTHONPATH, no sourced ROS environment)."""
    shim = PREFIX / "bin" / "alpamayo-make-scenario-bag"
    res = run([str(shim), str(tmp_path / "bag"), "--duration", "2.5", "--width", "64",
               "--height", "36", "--write-params", str(tmp_path / "params.yaml")], cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    replay = run([str(PREFIX / "bin" / "alpamayo-replay"), str(tmp_path / "bag"), "--params",
                  str(tmp_path / "params.yaml"), "-o", str(tmp_path / "out"), "--quiet"],
                 cwd=tmp_path)
    assert replay.returncode == 0, replay.stdout + replay.stderr
    assert (tmp_path / "out" / "report.json").is_file()


# --------------------------------------------------------------------------- set-up path


@pytest.mark.slow
def test_setup_env_second_run_skips_everything_and_changes_nothing():
    """scripts/setup_env.sh on this venv: the run after a completed one is a no-op."""
    script = REPO / "scripts" / "setup_env.sh"
    env = clean_env(VENV_DIR=str(PREFIX))
    first = run(["bash", str(script)], env=env, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]

    def snapshot() -> dict[str, int]:
        watched = [PREFIX / "bin", PREFIX / "lib" / "alpamayo_ros", PREFIX / "share" / "alpamayo_ros", SITE / "alpamayo_ros"]
        return {str(p): p.stat().st_mtime_ns for d in watched for p in d.rglob("*")
                if p.is_file() and "__pycache__" not in p.parts}

    before = snapshot()
    second = run(["bash", str(script)], env=env, timeout=120)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "requirements unchanged, skipping pip" in second.stderr
    assert "sources unchanged since the last install, skipping cmake" in second.stderr
    after = snapshot()
    changed = sorted(k for k in after if before.get(k) != after[k])
    assert not changed and after.keys() == before.keys(), changed[:10]


# --------------------------------------------------------------------------- colcon


IGNORED_TOP_LEVEL = {".git", ".venv", "build", "install", "log", ".pytest_cache"}


def copy_source_tree(dst: Path) -> None:
    """The files a fresh clone has: git's tracked and untracked-but-not-ignored files, or
    (outside a git checkout) everything but the build and environment directories."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True,
    )
    if listed.returncode == 0 and (REPO / ".git").exists():
        rels = [r for r in listed.stdout.decode().split("\0") if r]
    else:
        rels = [str(p.relative_to(REPO)) for p in REPO.rglob("*")
                if p.is_file() and p.relative_to(REPO).parts[0] not in IGNORED_TOP_LEVEL
                and "__pycache__" not in p.parts]
    for rel in rels:
        src = REPO / rel
        if src.is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)


@pytest.mark.slow
def test_colcon_build_produces_the_install_space(tmp_path):
    if shutil.which("colcon", path=str(PREFIX / "bin")) is None:
        pytest.fail(f"need colcon in {PREFIX / 'bin'} (requirements-ros.txt)")
    src = tmp_path / "ws" / "src" / "alpamayo_ros"
    copy_source_tree(src)
    # The launch file and the parameters are written by another part of the project; a
    # partial checkout still has to build.
    for rel in ("launch/planner.launch.py", "config/planner.yaml"):
        if not (src / rel).exists():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            (src / rel).write_text("# placeholder for the layout test\n")

    ws = tmp_path / "ws"
    env = clean_env(
        PATH=f"{PREFIX / 'bin'}{os.pathsep}{os.environ['PATH']}",
        AMENT_PREFIX_PATH=str(PREFIX),  # the ROS underlay is the venv
        CMAKE_PREFIX_PATH=str(PREFIX),
        MAKEFLAGS="-j2",
    )
    build = run(
        [str(PREFIX / "bin" / "colcon"), "--log-base", str(ws / "log"), "build",
         "--base-paths", "src", "--event-handlers", "console_cohesion-",
         "--cmake-args", f"-DPython3_EXECUTABLE={sys.executable}", "-DBUILD_TESTING=ON"],
        cwd=ws, env=env, timeout=300,
    )
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]
    # `colcon test` runs ctest in the build directory: the pytest suite is registered.
    listed = run(["ctest", "-N", "--test-dir", str(ws / "build" / "alpamayo_ros")], env=env)
    assert "alpamayo_ros_pytest" in listed.stdout, listed.stdout + listed.stderr

    inst = ws / "install" / "alpamayo_ros"
    for name in EXECUTABLES:
        assert os.access(inst / "lib" / "alpamayo_ros" / name, os.X_OK), name
    share = inst / "share" / "alpamayo_ros"
    assert (share / "launch" / "planner.launch.py").is_file()
    assert (share / "config" / "planner.yaml").is_file()
    assert (share / "config" / "fastdds_large_messages.xml").is_file()
    assert (share / "package.xml").is_file()
    site = inst / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    assert (site / "alpamayo_ros" / "core" / "types.py").is_file()

    # The install space alone (sourced like a ROS user would) provides the messages.
    probe = (
        f". {ws / 'install' / 'setup.bash'} && cd {tmp_path} && "
        f"{sys.executable} -c 'import alpamayo_ros.msg as m, alpamayo_ros.core.types as t; "
        "print(m.__file__); print(t.__file__); print(m.PlannerOutput.STATUS_MODEL_ERROR)'"
    )
    res = run(["bash", "-c", probe], env=env)
    assert res.returncode == 0, res.stderr
    msg_file, types_file, status = res.stdout.split()
    assert msg_file.startswith(str(site)) and types_file.startswith(str(site))
    assert status == "3"
    help_res = run([str(inst / "lib" / "alpamayo_ros" / "make_scenario_bag"), "--help"],
                   env=dict(env, PYTHONPATH=str(site)))
    assert help_res.returncode == 0 and "usage:" in help_res.stdout, help_res.stderr
