"""A minimal DNS client over UDP (A and SRV queries), to check the cluster DNS server.

Only what the local cluster's checks need: one question, the answer's rcode and its
A records or SRV targets; no recursion, no compression in the query.
"""

from __future__ import annotations

import secrets
import socket
import struct
from dataclasses import dataclass

TYPE_A = 1
TYPE_SRV = 33
CLASS_IN = 1
RCODE_NOERROR = 0
RCODE_NXDOMAIN = 3
RCODE_REFUSED = 5
PORT = 53


@dataclass(frozen=True)
class Answer:
    rcode: int
    addresses: tuple[str, ...]  # A records, in the order received
    targets: tuple[tuple[int, str], ...]  # SRV records: (port, target name)


def query_packet(name: str, qtype: int, query_id: int) -> bytes:
    """A standard query with recursion desired (RD), one question."""
    header = struct.pack(">HHHHHH", query_id, 0x0100, 1, 0, 0, 0)
    labels = b"".join(
        bytes([len(label)]) + label.encode("ascii") for label in name.rstrip(".").split(".")
    )
    return header + labels + b"\x00" + struct.pack(">HH", qtype, CLASS_IN)


def read_name(packet: bytes, offset: int) -> tuple[str, int]:
    """The name at `offset` (following compression pointers) and the offset after it."""
    labels: list[str] = []
    end: int | None = None
    while True:
        length = packet[offset]
        if length & 0xC0 == 0xC0:
            if end is None:
                end = offset + 2
            offset = struct.unpack_from(">H", packet, offset)[0] & 0x3FFF
            continue
        if length == 0:
            return ".".join(labels), (offset + 1 if end is None else end)
        labels.append(packet[offset + 1 : offset + 1 + length].decode("ascii"))
        offset += 1 + length


def parse_answer(packet: bytes, query_id: int) -> Answer:
    answer_id, flags, questions, answers = struct.unpack_from(">HHHH", packet)
    if answer_id != query_id:
        raise ValueError(f"answer id {answer_id} does not match query id {query_id}")
    offset = 12
    for _ in range(questions):
        offset = read_name(packet, offset)[1] + 4
    addresses: list[str] = []
    targets: list[tuple[int, str]] = []
    for _ in range(answers):
        offset = read_name(packet, offset)[1]
        rtype, _rclass, _ttl, length = struct.unpack_from(">HHIH", packet, offset)
        offset += 10
        if rtype == TYPE_A:
            addresses.append(socket.inet_ntoa(packet[offset : offset + length]))
        elif rtype == TYPE_SRV:
            port = struct.unpack_from(">H", packet, offset + 4)[0]
            targets.append((port, read_name(packet, offset + 6)[0]))
        offset += length
    return Answer(rcode=flags & 0x000F, addresses=tuple(addresses), targets=tuple(targets))


def resolve(server: str, name: str, qtype: int = TYPE_A, timeout: float = 2.0) -> Answer:
    """Ask `server` (port 53, UDP) one question and return its answer."""
    query_id = secrets.randbelow(0x10000)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(query_packet(name, qtype, query_id), (server, PORT))
        packet, _ = sock.recvfrom(4096)
    return parse_answer(packet, query_id)
