"""Plain setuptools description of alpamayo_ros for consumers without ROS.

`pip install .` installs the ROS-free core, the model runtime and the tools (for example
replay or regression workers on a cluster). It does not generate the ROS messages
(alpamayo_ros.msg) nor install executables under lib/alpamayo_ros/: the ROS build of this
repository is the CMake one (CMakeLists.txt, driven by colcon on a ROS 2 install or by
scripts/setup_env.sh in a venv). The rclpy nodes in alpamayo_ros.ros are shipped but
import rclpy only when used.
"""
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent


def read_requirements(name: str) -> list[str]:
    """Requirement lines of a requirements file, without comments and blank lines."""
    lines = (HERE / name).read_text().splitlines()
    return [ln.split("#", 1)[0].strip() for ln in lines if ln.split("#", 1)[0].strip()]


setup(
    name="alpamayo_ros",
    version="0.1.0",
    description="NVIDIA Alpamayo-R1 driving model as a ROS 2 planner: core, runtime and tools",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.11",  # numpy 2.4, scipy 1.17 and matplotlib 3.11 need 3.11
    packages=find_packages(include=["alpamayo_ros", "alpamayo_ros.*"]),
    # The closed-loop simulator's default route and route suite.
    package_data={"alpamayo_ros.sim": ["data/*.json", "data/suite/*.json"]},
    install_requires=read_requirements("requirements.txt"),
    extras_require={"test": read_requirements("requirements-test.txt")},
    entry_points={
        # The ROS-free tools; the node executables need the ROS build (see above).
        "console_scripts": [
            "alpamayo-replay = alpamayo_ros.tools.replay:main",
            "alpamayo-make-tiny-checkpoint = alpamayo_ros.model.tiny_checkpoint:main",
            "alpamayo-make-scenario-bag = alpamayo_ros.tools.make_bag:main",
        ],
    },
)
