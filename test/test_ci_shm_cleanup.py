""".ci/clean_fastdds_shm.py removes only this run's unused Fast DDS shared-memory files."""
from __future__ import annotations

import fcntl
import mmap
import os
import signal
import sys
from pathlib import Path

import pytest

import ros_harness

sys.path.insert(0, str(ros_harness.REPO_ROOT / ".ci"))
import clean_fastdds_shm as shm  # noqa: E402


def touch(d: Path, *names: str) -> None:
    for n in names:
        (d / n).write_bytes(b"\0" * 4096)


def test_group_key_joins_segment_port_lock_and_mutex_files():
    assert shm.group_key("fastdds_port7411") == "fastdds_port7411"
    assert shm.group_key("fastdds_port7411_el") == "fastdds_port7411"
    assert shm.group_key("sem.fastdds_port7411_mutex") == "fastdds_port7411"
    assert shm.group_key("fastdds_0123456789abcdef_el") == "fastdds_0123456789abcdef"


def test_only_new_unused_groups_are_removed(tmp_path):
    touch(tmp_path, "fastdds_port1", "fastdds_port1_el", "sem.fastdds_port1_mutex")  # before the run
    touch(tmp_path, "fastdds_port2", "fastdds_port2_el", "sem.fastdds_port2_mutex")  # leftover of ours
    touch(tmp_path, "fastdds_aaaaaaaaaaaaaaaa", "fastdds_aaaaaaaaaaaaaaaa_el")  # locked: live owner
    touch(tmp_path, "fastdds_bbbbbbbbbbbbbbbb", "fastdds_bbbbbbbbbbbbbbbb_el")  # mapped: live owner
    touch(tmp_path, "unrelated_file", "fastdds_port2_unrelated_suffix")
    before = {"fastdds_port1", "fastdds_port1_el", "sem.fastdds_port1_mutex"}

    with open(tmp_path / "fastdds_aaaaaaaaaaaaaaaa_el", "ab") as lock_fd, \
         open(tmp_path / "fastdds_bbbbbbbbbbbbbbbb", "r+b") as mapped_fd:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        mapping = mmap.mmap(mapped_fd.fileno(), 4096)
        try:
            dry_removed, _ = shm.clean(tmp_path, before, dry_run=True)
            assert all((tmp_path / n).exists() for n in dry_removed)
            removed, kept = shm.clean(tmp_path, before)
        finally:
            mapping.close()

    assert removed == dry_removed
    assert removed == sorted(["fastdds_port2", "fastdds_port2_el", "sem.fastdds_port2_mutex", "fastdds_port2_unrelated_suffix"])
    assert set(kept) == {"fastdds_aaaaaaaaaaaaaaaa", "fastdds_aaaaaaaaaaaaaaaa_el",
                         "fastdds_bbbbbbbbbbbbbbbb", "fastdds_bbbbbbbbbbbbbbbb_el"}
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(before | set(kept) | {"unrelated_file"})


def test_main_refuses_without_a_listing(tmp_path, capsys):
    assert shm.main(["--before", str(tmp_path / "missing.txt"), "--shm-dir", str(tmp_path)]) == 1
    assert "removing nothing" in capsys.readouterr().err


@pytest.mark.ros
@pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="needs /dev/shm (Linux)")
def test_sigkilled_node_leftovers_are_removed(ros_process, ros_node):
    before = set(os.listdir("/dev/shm"))
    proc = ros_process("ros_test_publisher", "planner_output",
                       command=[sys.executable, str(Path(__file__).with_name("ros_test_publisher.py"))],
                       remaps={"output": "/shm_cleanup"})
    ros_node.wait_for_publisher("/shm_cleanup", timeout=15.0)
    created = shm.fastdds_files(Path("/dev/shm")) - before
    assert created, "the node created no Fast DDS shared-memory files"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.popen.wait(10)

    removed, kept = shm.clean(Path("/dev/shm"), before)
    assert removed, f"nothing removed of {sorted(created)}"
    # Whatever of the new files remains is still used by a live process (our test node, or
    # another test run on this machine).
    used = shm.paths_in_use(Path("/dev/shm"))
    for name in sorted(shm.fastdds_files(Path("/dev/shm")) - before):
        group = [p for p in Path("/dev/shm").iterdir() if shm.group_key(p.name) == shm.group_key(name)]
        assert any(str(p) in used or (p.name.endswith("_el") and shm.is_flocked(p)) for p in group), name
