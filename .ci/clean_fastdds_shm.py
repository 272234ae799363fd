#!/usr/bin/env python3
"""Remove the Fast DDS shared-memory files that this CI run's processes left in /dev/shm.

A ROS 2 process killed with SIGKILL cannot unlink its Fast DDS segments, port queues and
semaphores; they accumulate in /dev/shm. A file is removed here only when

* it was not there before the run (``--before``: a listing of /dev/shm taken at the
  start), so files of processes outside this run are never touched, and
* no live process maps it, holds it open (psutil) or holds its Fast DDS lock, judged for
  the whole segment or port group, so nothing still running loses it.

Why not ``fastdds shm clean``: it also deletes every data-sharing segment
(``fast_datasharing_*``) unconditionally, including those of other processes that are
still running on the machine, and it is not limited to this run's files.
"""
from __future__ import annotations

import argparse
import fcntl
import os
import sys
from pathlib import Path

import psutil

FASTDDS_PREFIXES = ("fastdds_", "fastrtps_", "sem.fastdds_", "sem.fastrtps_", "fast_datasharing_")


def fastdds_files(shm_dir: Path) -> set[str]:
    """Names of the Fast DDS files in ``shm_dir``."""
    try:
        return {n for n in os.listdir(shm_dir) if n.startswith(FASTDDS_PREFIXES)}
    except FileNotFoundError:
        return set()


def paths_in_use(shm_dir: Path) -> set[str]:
    """Paths under ``shm_dir`` that some live process maps or has open."""
    prefix = str(shm_dir).rstrip("/") + "/"
    used: set[str] = set()
    for proc in psutil.process_iter():
        try:
            for m in proc.memory_maps(grouped=True):
                if m.path.startswith(prefix):
                    used.add(m.path.split(" (deleted)")[0])
            for f in proc.open_files():
                if f.path.startswith(prefix):
                    used.add(f.path)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return used


def group_key(name: str) -> str:
    """The segment or port a file belongs to: ``fastdds_port7411`` for ``fastdds_port7411``,
    ``fastdds_port7411_el`` and ``sem.fastdds_port7411_mutex``; segments likewise."""
    if name.startswith("sem."):
        name = name[4:]
    for suffix in ("_el", "_sl", "_mutex"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def is_flocked(path: Path) -> bool:
    """True when another process holds the flock that Fast DDS keeps on a live segment's or
    port's ``_el``/``_sl`` file."""
    try:
        with open(path, "ab") as fd:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except BlockingIOError:
        return True
    except OSError:
        return False  # vanished meanwhile


def clean(shm_dir: Path, before: set[str], dry_run: bool = False) -> tuple[list[str], list[str]]:
    """(removed, kept because in use) among the Fast DDS files created since ``before``.

    Files are judged per segment/port group: a group is left alone when any of its files
    was there before the run, is mapped or open in a live process, or has its lock held.
    """
    groups: dict[str, list[str]] = {}
    for name in fastdds_files(shm_dir):
        groups.setdefault(group_key(name), []).append(name)
    new_groups = {k: sorted(v) for k, v in groups.items() if not any(n in before for n in v)}
    if not new_groups:
        return [], []
    used = paths_in_use(shm_dir)
    removed: list[str] = []
    kept: list[str] = []
    for names in new_groups.values():
        paths = [shm_dir / n for n in names]
        busy = any(str(p) in used for p in paths) or any(
            is_flocked(p) for p in paths if p.name.endswith(("_el", "_sl"))
        )
        if busy:
            kept += names
            continue
        for p in paths:
            if not dry_run:
                try:
                    p.unlink()
                except FileNotFoundError:
                    pass  # its owner exited cleanly meanwhile
            removed.append(p.name)
    return sorted(removed), sorted(kept)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, required=True,
                        help="listing of the shm directory (one name per line) taken before "
                             "the run")
    parser.add_argument("--shm-dir", type=Path, default=Path("/dev/shm"))
    parser.add_argument("--dry-run", action="store_true", help="only report what would be removed")
    args = parser.parse_args(argv)
    before = set(args.before.read_text().split()) if args.before.is_file() else None
    if before is None:
        print(f"[shm] no listing at {args.before}: removing nothing", file=sys.stderr)
        return 1
    removed, kept = clean(args.shm_dir, before, dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    print(f"[shm] {verb} {len(removed)} leftover Fast DDS files of this run "
          f"({len(kept)} still in use by live processes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
