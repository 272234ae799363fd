"""Damaged bags: a truncated mcap replays up to the truncation, corrupted bytes are found
(mcap CRCs, sqlite's structure check), and both end the bag with status error, exit 2."""
from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest
from rosbags.rosbag2 import Reader

from alpamayo_ros.bag import bag_io, mcap_stream
from alpamayo_ros.tools import make_bag, replay
from scenario_bags import write_bag

# Compared between an intact and a damaged replay of the same bag (metrics need the
# future odometry, which a truncation cuts, so they are not compared).
TICK_KEYS = ("now_ns", "t0_ns", "status", "reason", "v0", "candidates", "epoch")


@pytest.fixture(scope="module")
def drive(tmp_path_factory):
    """A 9 s curved drive in mcap (4 chunks of ~1 MiB) and its intact replay."""
    root = tmp_path_factory.mktemp("damage")
    summary = write_bag(root / "bag", "curved_drive", duration_s=9.0)
    params = root / "params.yaml"
    make_bag.write_parameter_file(params, make_bag.planner_parameters_for(summary))
    code, report = _replay(root / "bag", params, root / "intact")
    assert code == 0 and report["bags"][0]["status"] == "ok"
    return root, params, report["bags"][0]


def _replay(bag: Path, params: Path, out: Path) -> tuple[int, dict]:
    code = replay.main([str(bag), "--params", str(params), "-o", str(out), "--quiet",
                        "--no-plot"])
    return code, json.loads((out / "report.json").read_text())


def _damaged_copy(root: Path, name: str, edit) -> tuple[Path, Path]:
    """A copy of the scenario bag whose data file is edit(bytes)."""
    bag = root / name
    shutil.copytree(root / "bag", bag)
    data_file = next(bag.glob("*.mcap"))
    data_file.write_bytes(edit(data_file.read_bytes()))
    return bag, data_file


def _chunk_offsets(data: bytes) -> list:
    """Offsets of the top-level chunk records of an MCAP file."""
    out, pos = [], len(mcap_stream.MAGIC)
    while pos < len(data):
        opcode, length = struct.unpack_from("<BQ", data, pos)
        if opcode == 0x06:
            out.append(pos)
        if opcode == 0x02:
            break
        pos += 9 + length
    return out


def _ticks(result: dict) -> list:
    return [{k: t[k] for k in TICK_KEYS} for t in result["ticks"]]


def test_written_mcap_files_carry_crcs_and_read_like_rosbags(drive):
    root, _, _ = drive
    data_file = next((root / "bag").glob("*.mcap"))
    data = data_file.read_bytes()
    chunks = _chunk_offsets(data)
    assert len(chunks) >= 3
    for offset in chunks:  # uncompressed_crc follows start, end and size
        assert struct.unpack_from("<I", data, offset + 9 + 24)[0] != 0
    footer_crc = struct.unpack_from("<I", data, len(data) - 8 - 4)[0]
    assert footer_crc != 0
    with Reader(root / "bag") as reader:
        want = [(c.topic, t, bytes(raw)) for c, t, raw in reader.messages()]
    with bag_io.BagReader(root / "bag") as reader:
        have = [(c.topic, t, raw) for c, t, raw in reader.raw_messages()]
    assert have == want and len(have) == sum(reader.message_counts.values())


@pytest.mark.parametrize("fraction", [0.45, 0.7, 0.95])
def test_truncated_mcap_replays_the_ticks_before_the_truncation(drive, fraction, capsys):
    root, params, intact = drive
    bag, data_file = _damaged_copy(root, f"cut{fraction}", lambda b: b[:int(len(b) * fraction)])
    size = data_file.stat().st_size
    code, report = _replay(bag, params, root / f"out_cut{fraction}")
    assert code == 2
    result = report["bags"][0]
    assert result["status"] == "error"
    assert f"bag.mcap is truncated at byte {size} after " in result["error"]
    assert "the file ends inside a CHUNK record" in result["error"]
    assert str(bag) in capsys.readouterr().err
    # The ticks made before the truncation are those of the intact bag, to the byte.
    ticks = _ticks(result)
    assert ticks, "ticks before the truncation must be kept"
    assert ticks == _ticks(intact)[:len(ticks)]
    assert len(ticks) < len(intact["ticks"])
    assert any(t["status"] == "OK" for t in ticks)
    # Every message read reached the replay; only the cut chunk (~1 MiB, rosbags' chunk
    # size) is lost: messages are spread evenly over the file, so the count shows it.
    read = int(result["error"].split(" after ")[1].split()[0])
    assert read == result["counts"]["messages"]
    total, full_size = intact["counts"]["messages"], len(data_file.parent.parent.joinpath(
        "bag", data_file.name).read_bytes())
    assert total * (size - 1.1 * 2**20) / full_size <= read < total * size / full_size


def test_truncation_inside_the_first_chunk_or_the_summary(drive):
    root, params, intact = drive
    bag, _ = _damaged_copy(root, "cut_first", lambda b: b[:5000])
    code, report = _replay(bag, params, root / "out_cut_first")
    assert code == 2 and report["bags"][0]["ticks"] == []
    assert "truncated at byte 5000 after 0 messages" in report["bags"][0]["error"]
    # Only the footer is missing: every message was read, every tick made, still an error.
    bag, _ = _damaged_copy(root, "cut_footer", lambda b: b[:-20])
    code, report = _replay(bag, params, root / "out_cut_footer")
    result = report["bags"][0]
    assert code == 2 and result["status"] == "error"
    total = intact["counts"]["messages"]
    assert f"after {total} messages: the file ends inside a FOOTER record" in result["error"]
    ticks = _ticks(result)
    assert ticks == _ticks(intact)[:len(ticks)]
    # The replay ends an erroneous bag without the ticks that wait for max-delay (0.5 s)
    # of later messages; every other tick is there.
    last = intact["ticks"][-1]["now_ns"]
    assert all(t["now_ns"] > last - 500_000_000 for t in intact["ticks"][len(ticks):])


def test_corrupted_bytes_in_the_middle_are_found_by_the_chunk_crc(drive):
    root, params, intact = drive
    data = next((root / "bag").glob("*.mcap")).read_bytes()
    chunks = _chunk_offsets(data)
    middle = (chunks[1] + chunks[2]) // 2  # inside the second chunk's messages

    bag, _ = _damaged_copy(root, "zeros", lambda b: b[:middle] + bytes(64) + b[middle + 64:])
    code, report = _replay(bag, params, root / "out_zeros")
    result = report["bags"][0]
    assert code == 2 and result["status"] == "error"
    assert f"bag.mcap is corrupt at byte {chunks[1]} after " in result["error"]
    assert f"chunk at byte {chunks[1]}: CRC mismatch (stored 0x" in result["error"]
    ticks = _ticks(result)
    assert ticks == _ticks(intact)[:len(ticks)] and len(ticks) < len(intact["ticks"])


@pytest.mark.parametrize("where", ["record length", "summary"])
def test_corrupted_framing_and_summary_are_found(drive, where):
    root, params, _ = drive
    data = next((root / "bag").glob("*.mcap")).read_bytes()
    if where == "record length":  # the second chunk's length field claims 1 byte more
        at = _chunk_offsets(data)[1] + 1
        value = struct.unpack_from("<Q", data, at)[0] + 1
        edit = lambda b: b[:at] + struct.pack("<Q", value) + b[at + 8:]  # noqa: E731
        want = "is corrupt at byte"
    else:  # one bit of the statistics in the summary section
        at = data.rfind(bytes([0x0B]), 0, len(data) - 200)
        edit = lambda b: b[:at + 12] + bytes([b[at + 12] ^ 1]) + b[at + 13:]  # noqa: E731
        want = "summary CRC mismatch"
    bag, _ = _damaged_copy(root, f"frame_{where.replace(' ', '_')}", edit)
    code, report = _replay(bag, params, root / f"out_{where.replace(' ', '_')}")
    assert code == 2 and report["bags"][0]["status"] == "error"
    assert want in report["bags"][0]["error"]


def test_stream_reader_numbers_and_order(tmp_path):
    """Truncation points give a prefix of the messages; the order is rosbags' order for
    messages written out of log-time order inside and across chunks."""
    path = tmp_path / "bag"
    payload = bytes(300_000)  # 4 messages fill a 1 MiB chunk
    times = [10, 5, 7, 7, 30, 12, 12, 31, 40, 33, 45, 41, 41, 50]
    with bag_io.BagWriter(path, "mcap") as writer:
        for i, t in enumerate(times):
            msg = bag_io.msg_class("std_msgs/msg/String")(data=f"{i}" + "x" * len(payload))
            writer.write("/t", "std_msgs/msg/String", t, msg)
    data_file = next(path.glob("*.mcap"))
    with Reader(path) as reader:
        want = [(t, bytes(raw)) for _, t, raw in reader.messages()]
    have = [(m.log_time_ns, m.data) for m in mcap_stream.read_messages(data_file)]
    assert have == want and len(_chunk_offsets(data_file.read_bytes())) >= 3
    raw = data_file.read_bytes()
    for cut in (len(raw) // 3, 2 * len(raw) // 3):
        cut_file = tmp_path / f"cut{cut}.mcap"
        cut_file.write_bytes(raw[:cut])
        got = []
        with pytest.raises(mcap_stream.McapDamage) as info:
            for m in mcap_stream.read_messages(cut_file):
                got.append(m.log_time_ns)
        assert info.value.kind == "truncated" and info.value.offset == cut
        assert info.value.messages == len(got) > 0
        assert sorted(got) == got and set(got) <= set(times)


def test_missing_metadata_reads_the_mcap_and_reports_an_error(drive):
    root, params, intact = drive
    bag = root / "no_metadata"
    shutil.copytree(root / "bag", bag)
    (bag / "metadata.yaml").unlink()
    code, report = _replay(bag, params, root / "out_no_metadata")
    result = report["bags"][0]
    assert code == 2 and "cannot open bag" in result["error"]
    assert f"the {intact['counts']['messages']} messages of its mcap files were read" \
        in result["error"]
    ticks = _ticks(result)
    assert ticks == _ticks(intact)[:len(ticks)]
    last = intact["ticks"][-1]["now_ns"]
    assert all(t["now_ns"] > last - 500_000_000 for t in intact["ticks"][len(ticks):])


def test_corrupted_sqlite3_database_is_reported(tmp_path):
    summary = write_bag(tmp_path / "bag", "curved_drive", duration_s=9.0, storage="sqlite3")
    params = tmp_path / "params.yaml"
    make_bag.write_parameter_file(params, make_bag.planner_parameters_for(summary))
    db = next((tmp_path / "bag").glob("*.db3"))
    raw = db.read_bytes()
    # One whole database page late in the file: sqlite reads on without an error (rows
    # of the damaged b-tree page just vanish), only its structure check sees it.
    page = 4096
    at = int(len(raw) * 0.8) // page * page
    db.write_bytes(raw[:at] + bytes([0xA5]) * page + raw[at + page:])
    code, report = _replay(tmp_path / "bag", params, tmp_path / "out")
    result = report["bags"][0]
    assert code == 2 and result["status"] == "error"
    assert "bag.db3 is corrupt (sqlite quick_check: " in result["error"]
    assert result["ticks"], "the ticks replayed before the check are kept"
