"""MCAP files read front to back with every checksum checked; CRCs filled in after writing.

Why not rosbags' MCAP reader (bag_io keeps it for sqlite3): it starts from the summary at
the end of the file, so a file cut short (crashed recorder, full disk, interrupted copy)
cannot be opened at all, and it checks no CRC but the chunks' own. Here a file is read the
way it was written, record after record:

* `read_messages(path)` yields every complete message in log-time order and raises
  `McapDamage` at the first damage, after the messages before it: a truncation (the file
  ends inside a record, or before its footer) or a corruption (a chunk, data-section or
  summary CRC that does not match, a record or length that cannot be right). Messages of
  a chunk are released only once the whole chunk was read and its CRC matched, so a
  truncation loses at most the messages of the chunk it cuts.
* Order: the messages of each chunk sorted by log time (stable), chunk after chunk,
  messages still pending from earlier chunks merged in (the order of rosbags' reader for
  every file whose chunks start in non-decreasing time, i.e. what recorders write).
* `fill_crcs(path)`: rosbags' writer leaves every CRC of the file 0 ("not present"), so
  corruption of the data could never be seen. This writes the chunk, data-section and
  summary CRCs into such a file in place (fields that are already set stay untouched).

The `mcap` package parses the records, decompresses chunks and checks chunk CRCs
(`get_chunk_data_stream`); its StreamReader is not used because it does not tell a
truncated record from a short one, gives no byte offsets for messages and skips unknown
opcodes silently. The framing loop below (opcode + length, MCAP spec section "Records")
adds exactly that.
"""
from __future__ import annotations

import heapq
import os
import struct
import zlib
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator, Optional

from mcap.data_stream import ReadDataStream
from mcap.opcode import Opcode
from mcap.records import Channel, Chunk, DataEnd, Footer, Message, Schema
from mcap.stream_reader import CRCValidationError, get_chunk_data_stream

MAGIC = b"\x89MCAP0\r\n"
RECORD_HEADER = 9                   # opcode (1) + length (8)
FOOTER_BODY = 20                    # summary_start, summary_offset_start, summary_crc
MESSAGE_HEADER = 22                 # channel id, sequence, log time, publish time
CHUNK_CRC_OFFSET = 8 + 8 + 8        # start time, end time, uncompressed size
_OPCODE_NAMES = {int(op): op.name for op in Opcode}


class McapDamage(Exception):
    """The file is damaged. kind: "truncated" or "corrupt"; offset: byte where it shows;
    messages: complete messages read before it (all topics)."""

    def __init__(self, kind: str, offset: int, messages: int, detail: str) -> None:
        self.kind, self.offset, self.messages, self.detail = kind, offset, messages, detail
        where = "truncated" if kind == "truncated" else "corrupt"
        super().__init__(f"{where} at byte {offset} after {messages} messages: {detail}")


@dataclass(frozen=True)
class McapMessage:
    topic: str
    msgtype: str          # the schema name, e.g. "nav_msgs/msg/Odometry"
    log_time_ns: int
    data: bytes           # the serialised (CDR) message


@dataclass
class McapSummary:
    """What a pass over a file found (for files whose own summary cannot be used)."""

    channels: dict = field(default_factory=dict)      # (topic, msgtype) -> message count
    start_ns: Optional[int] = None
    end_ns: Optional[int] = None


def _name(opcode: int) -> str:
    return _OPCODE_NAMES.get(opcode, f"opcode 0x{opcode:02x}")


def has_footer(path: Path) -> bool:
    """True when the file ends with a footer record and the closing magic (written whole)."""
    size = os.path.getsize(path)
    tail = RECORD_HEADER + FOOTER_BODY + len(MAGIC)
    if size < len(MAGIC) + tail:
        return False
    with open(path, "rb") as f:
        f.seek(size - tail)
        data = f.read(tail)
    return (data[-len(MAGIC):] == MAGIC
            and data[:RECORD_HEADER] == struct.pack("<BQ", Opcode.FOOTER, FOOTER_BODY))


class _Reader:
    """Exact reads of one file: a read past the end is a truncation (no footer) or a
    corruption (the footer is there, so a record claims more bytes than exist)."""

    def __init__(self, f: BinaryIO, size: int, complete: bool) -> None:
        self.f, self.size, self.complete = f, size, complete
        self.pos = 0
        self.messages = 0

    def damage(self, kind: str, offset: int, detail: str) -> McapDamage:
        return McapDamage(kind, offset, self.messages, detail)

    def read(self, n: int, record_start: int, what: str) -> bytes:
        if n > self.size - self.pos:
            if self.complete:
                raise self.damage("corrupt", record_start,
                                  f"{what} needs {n} bytes, the file has {self.size - self.pos} "
                                  f"left before its end at byte {self.size}")
            raise self.damage("truncated", self.size,
                              f"the file ends inside {what} starting at byte {record_start} "
                              f"(have {self.size - self.pos} of its {n} bytes)")
        data = self.f.read(n)
        if len(data) != n:  # the file shrank while being read
            raise self.damage("truncated", self.pos + len(data), f"short read of {what}")
        self.pos += n
        return data


def _parse(cls, body: bytes, reader: _Reader, offset: int, what: str, *args):
    try:
        return cls.read(ReadDataStream(BytesIO(body)), *args)
    except Exception as exc:  # struct.error, EndOfFile, UnicodeDecodeError: bad fields
        raise reader.damage("corrupt", offset, f"{what} cannot be parsed: "
                            f"{type(exc).__name__}: {exc}") from exc


class _Channels:
    """Schemas and channels seen so far (they precede their messages, in or out of chunks)."""

    def __init__(self, wanted: Optional[set]) -> None:
        self.schemas: dict[int, str] = {}
        self.channels: dict[int, tuple[str, str]] = {}
        self.wanted = wanted

    def add(self, record) -> None:
        if isinstance(record, Schema):
            self.schemas[record.id] = record.name
        else:
            self.channels[record.id] = (record.topic, self.schemas.get(record.schema_id, ""))

    def message(self, msg: Message, reader: _Reader, offset: int) -> Optional[McapMessage]:
        """The message, None when its topic is not wanted; damage for an unknown channel."""
        channel = self.channels.get(msg.channel_id)
        if channel is None:
            raise reader.damage("corrupt", offset, f"message on channel {msg.channel_id}, "
                                f"which no channel record defined (have {sorted(self.channels)})")
        if self.wanted is not None and channel[0] not in self.wanted:
            return None
        return McapMessage(channel[0], channel[1], msg.log_time, msg.data)


def _chunk_records(chunk: Chunk, reader: _Reader, offset: int) -> Iterator[tuple[int, bytes]]:
    """(opcode, body) of the records in a chunk, after its CRC and size checked out."""
    what = f"chunk at byte {offset}"
    try:
        stream, size = get_chunk_data_stream(chunk, validate_crc=True)
        data = stream.read(size)
    except CRCValidationError as exc:
        raise reader.damage("corrupt", offset, f"{what}: CRC mismatch (stored "
                            f"0x{exc.expected:08x}, computed 0x{exc.actual:08x})") from exc
    except Exception as exc:  # lz4/zstd errors, unsupported compression
        raise reader.damage("corrupt", offset, f"{what} ({chunk.compression or 'uncompressed'})"
                            f" cannot be decompressed: {type(exc).__name__}: {exc}") from exc
    if len(data) != chunk.uncompressed_size:
        raise reader.damage("corrupt", offset, f"{what}: have {len(data)} uncompressed bytes, "
                            f"its header says {chunk.uncompressed_size}")
    pos = 0
    while pos < len(data):
        if len(data) - pos < RECORD_HEADER:
            raise reader.damage("corrupt", offset, f"{what}: {len(data) - pos} stray bytes "
                                f"after its last record (need {RECORD_HEADER} for a record)")
        opcode, length = struct.unpack_from("<BQ", data, pos)
        if length > len(data) - pos - RECORD_HEADER:
            raise reader.damage("corrupt", offset, f"{what}: {_name(opcode)} record at "
                                f"{pos} claims {length} bytes, the chunk has "
                                f"{len(data) - pos - RECORD_HEADER} left")
        yield opcode, data[pos + RECORD_HEADER: pos + RECORD_HEADER + length]
        pos += RECORD_HEADER + length


def _records(reader: _Reader) -> Iterator[tuple[int, int, bytes]]:
    """(offset, opcode, body) of the top-level records up to and including the footer,
    with the data-section and summary CRCs checked."""
    magic = reader.read(len(MAGIC), 0, "the leading magic")
    if magic != MAGIC:
        raise reader.damage("corrupt", 0, f"not an MCAP file: have magic {magic!r}, need "
                            f"{MAGIC!r}")
    data_crc = zlib.crc32(magic)
    summary_crc: Optional[int] = None  # running from the first record after DataEnd
    first = True
    while True:
        offset = reader.pos
        if offset == reader.size:
            raise reader.damage("truncated" if not reader.complete else "corrupt", offset,
                                "the file ends before its footer")
        head = reader.read(RECORD_HEADER, offset, "a record header")
        opcode, length = struct.unpack("<BQ", head)
        if (opcode not in _OPCODE_NAMES and opcode < 0x80) or (first and opcode != Opcode.HEADER):
            raise reader.damage("corrupt", offset, f"{_name(opcode)} record is not valid here "
                                "(MCAP records are 0x01-0x0f or private >= 0x80, the first is "
                                "the header)")
        first = False
        body = reader.read(length, offset, f"a {_name(opcode)} record")
        if opcode == Opcode.DATA_END:
            end = _parse(DataEnd, body, reader, offset, "data end record")
            if end.data_section_crc and end.data_section_crc != data_crc:
                raise reader.damage("corrupt", offset, "data section CRC mismatch (stored "
                                    f"0x{end.data_section_crc:08x}, computed 0x{data_crc:08x})"
                                    ": bytes before the data end record were altered")
            summary_crc = 0
        elif opcode == Opcode.FOOTER:
            footer = _parse(Footer, body, reader, offset, "footer")
            if footer.summary_start and footer.summary_crc and summary_crc is not None:
                computed = zlib.crc32(head + body[:16], summary_crc)
                if computed != footer.summary_crc:
                    raise reader.damage("corrupt", offset, "summary CRC mismatch (stored "
                                        f"0x{footer.summary_crc:08x}, computed "
                                        f"0x{computed:08x})")
            yield offset, opcode, body
            return
        elif summary_crc is None:
            data_crc = zlib.crc32(body, zlib.crc32(head, data_crc))
        else:
            summary_crc = zlib.crc32(body, zlib.crc32(head, summary_crc))
        yield offset, opcode, body


def _message(body: bytes, reader: _Reader, offset: int, what: str) -> Message:
    if len(body) < MESSAGE_HEADER:
        raise reader.damage("corrupt", offset, f"{what}: have {len(body)} bytes, need >= "
                            f"{MESSAGE_HEADER}")
    return _parse(Message, body, reader, offset, what, len(body))


def _scan(path: Path, wanted: Optional[set]) -> Iterator[list]:
    """The messages of `wanted` topics, one list per chunk (or unchunked message), in
    file order; a chunk's list comes only after the whole chunk was read and checked."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        reader = _Reader(f, size, has_footer(path))
        channels = _Channels(wanted)
        try:
            for offset, opcode, body in _records(reader):
                if opcode in (Opcode.SCHEMA, Opcode.CHANNEL):
                    channels.add(_parse(Schema if opcode == Opcode.SCHEMA else Channel, body,
                                        reader, offset, f"{_name(opcode)} record"))
                elif opcode == Opcode.MESSAGE:
                    msg = _message(body, reader, offset, f"message record at byte {offset}")
                    group = [channels.message(msg, reader, offset)]
                    reader.messages += 1
                    yield [m for m in group if m is not None]
                elif opcode == Opcode.CHUNK:
                    chunk = _parse(Chunk, body, reader, offset, "chunk record")
                    group = []
                    for inner_op, inner in _chunk_records(chunk, reader, offset):
                        what = f"{_name(inner_op)} record in the chunk at byte {offset}"
                        if inner_op in (Opcode.SCHEMA, Opcode.CHANNEL):
                            channels.add(_parse(Schema if inner_op == Opcode.SCHEMA else Channel,
                                                inner, reader, offset, what))
                        elif inner_op == Opcode.MESSAGE:
                            group.append(channels.message(_message(inner, reader, offset, what),
                                                          reader, offset))
                    reader.messages += len(group)
                    yield [m for m in group if m is not None]
        except OSError as exc:
            raise reader.damage("corrupt", reader.pos, f"read error: {exc}") from exc


def read_messages(path: Path | str, topics: Optional[Iterable[str]] = None
                  ) -> Iterator[McapMessage]:
    """Messages of `topics` (all when None) in log-time order; McapDamage after the
    messages before the first damage (see the module docstring)."""
    wanted = None if topics is None else set(topics)
    pending: list = []  # heap of (log time, chunk number, index in chunk, message)
    try:
        for number, group in enumerate(_scan(Path(path), wanted)):
            if not group:
                continue
            # Nothing later in the file is earlier than this chunk's first message (chunks
            # in non-decreasing start), so pending messages up to that time are final; at
            # equal times the earlier chunk goes first, as in rosbags' reader.
            first = min(m.log_time_ns for m in group)
            while pending and pending[0][0] <= first:
                yield heapq.heappop(pending)[3]
            for index, msg in enumerate(group):
                heapq.heappush(pending, (msg.log_time_ns, number, index, msg))
    except McapDamage:
        while pending:  # what was checked before the damage is delivered, then the damage
            yield heapq.heappop(pending)[3]
        raise
    while pending:
        yield heapq.heappop(pending)[3]


def summarise(path: Path | str) -> tuple[McapSummary, Optional[McapDamage]]:
    """Channels, message counts and time span of the readable part of a file, and the
    damage that ended it (None for an intact file)."""
    out = McapSummary()
    try:
        for group in _scan(Path(path), None):
            for msg in group:
                key = (msg.topic, msg.msgtype)
                out.channels[key] = out.channels.get(key, 0) + 1
                t = msg.log_time_ns
                out.start_ns = t if out.start_ns is None else min(out.start_ns, t)
                out.end_ns = t if out.end_ns is None else max(out.end_ns, t)
    except McapDamage as damage:
        return out, damage
    return out, None


def fill_crcs(path: Path | str) -> None:
    """Write the missing (zero) chunk, data-section and summary CRCs of an intact file."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "r+b") as f:
        reader = _Reader(f, size, complete=True)
        if reader.read(len(MAGIC), 0, "the leading magic") != MAGIC:
            raise ValueError(f"{path}: not an MCAP file")
        data_crc = zlib.crc32(MAGIC)
        summary_crc: Optional[int] = None
        while reader.pos < size:
            offset = reader.pos
            head = reader.read(RECORD_HEADER, offset, "a record header")
            opcode, length = struct.unpack("<BQ", head)
            body = bytearray(reader.read(length, offset, f"a {_name(opcode)} record"))
            patch = None
            if opcode == Opcode.CHUNK:
                chunk = _parse(Chunk, bytes(body), reader, offset, "chunk record")
                if not chunk.uncompressed_crc:
                    stream, n = get_chunk_data_stream(chunk)
                    patch = (CHUNK_CRC_OFFSET, zlib.crc32(stream.read(n)))
            elif opcode == Opcode.DATA_END:
                if not struct.unpack_from("<I", body)[0]:
                    patch = (0, data_crc)
                summary_crc = 0
            elif opcode == Opcode.FOOTER:
                start, _, crc = struct.unpack_from("<QQI", body)
                if start and not crc and summary_crc is not None:
                    patch = (16, zlib.crc32(head + bytes(body[:16]), summary_crc))
            if patch is not None:
                struct.pack_into("<I", body, patch[0], patch[1])
                f.seek(offset + RECORD_HEADER + patch[0])
                f.write(body[patch[0]: patch[0] + 4])
                f.seek(reader.pos)
            if opcode == Opcode.FOOTER:
                return
            if opcode == Opcode.DATA_END:
                continue
            if summary_crc is None:
                data_crc = zlib.crc32(bytes(body), zlib.crc32(head, data_crc))
            else:
                summary_crc = zlib.crc32(bytes(body), zlib.crc32(head, summary_crc))
        raise ValueError(f"{path}: no footer record before the end of the file")
