#!/usr/bin/env python3
"""Writes the edge-value seeds of fuzz/corpus/ (seed-edge-*). Run from anywhere:
    python3 fuzz/edge_seeds.py
The conn seeds follow the input layout documented in fuzz_targets/conn.rs."""
import json, os

HERE = os.path.dirname(os.path.abspath(__file__))
EDGES = [0, 1, 2, 2**32 - 2, 2**32 - 1, 2**32, 2**32 + 1, 2**62 - 2, 2**62 - 1, 2**62,
         2**63 - 2, 2**63 - 1, 2**63, 2**64 - 3, 2**64 - 2, 2**64 - 1]
WIRE_EDGES = [2**64 - 1, 2**64 - 2, 2**63, 2**63 - 1, 2**32 - 1, 2**32, 2**62, 2**64]


def write(target, name, data):
    path = os.path.join(HERE, "corpus", target, "seed-edge-" + name)
    with open(path, "wb") as f:
        f.write(data)


def datagram(kind, conn_id, seq, size, checksum=0, payload=None):
    # Raw text, so that numbers beyond u64 and i64 are written as they are.
    p = "null" if payload is None else '"%s"' % payload
    return ('{"Type":%d,"ConnID":%d,"SeqNum":%d,"Size":%d,"Checksum":%d,"Payload":%s}'
            % (kind, conn_id, seq, size, checksum, p)).encode()


# decode: each edge value in each numeric field of each message type.
for v in WIRE_EDGES:
    for kind in range(4):
        payload = "eA==" if kind == 1 else None
        write("decode", "seq-%d-%d" % (kind, v), datagram(kind, 1, v, 1, 0, payload))
        write("decode", "connid-%d-%d" % (kind, v), datagram(kind, v, 1, 1, 0, payload))
    write("decode", "size-%d" % v, datagram(1, 1, 1, v, 0, "eA=="))
    write("decode", "checksum-%d" % v, datagram(1, 1, 1, 1, v, "eA=="))

# server_recv: operations (see fuzz_targets/server_recv.rs); a datagram is
# [0, source selector, length, datagram], 4 ends a batch, [5, n] lets n
# quarter epochs pass. Connects with edge ISNs, then Data, Ack and CAck with
# edge values from the same address, each followed by a batch end.
def record(port, d):
    assert len(d) < 256
    return bytes([0, port, len(d)]) + d + bytes([4])

for i, v in enumerate(WIRE_EDGES):
    session = record(i, datagram(0, 0, v, 0))
    session += record(i, datagram(0, 0, 7, 0))
    for conn_id in (1, 2, v):
        session += record(i, datagram(1, conn_id, v, 1, 0, "eA=="))
        session += record(i, datagram(1, conn_id, 8, v, 0, "eA=="))
        session += record(i, datagram(2, conn_id, v, 0))
        session += record(i, datagram(3, conn_id, v, 0))
    session += bytes([5, 4]) * 4  # four epochs: resends, then the loss
    write("server_recv", "session-%d" % v, session)

# conn: header [role, ISN selector, window, max unacked, epoch limit, back-off],
# then a short exchange that reaches the edges of the windows.
def conn_seed(client, isn_index, window_sel):
    head = bytes([1 if client else 2, isn_index << 4, window_sel, 0, 5 << 2, 4 << 2])
    ops = b""
    if client:
        ops += bytes([128, 3, 0, 5])          # (Ack, 5, isn): connected as 5
    ops += bytes([12, 100])                   # two writes
    ops += bytes([49, 0, 0]) + b"abc"         # Data at next_expected
    ops += bytes([49, 4, 0xFF]) + b"xyz"      # Data at next_expected + window - 1
    ops += bytes([49, 4, 0]) + b"out"         # Data at next_expected + window
    ops += bytes([7, 1, 0])                   # Ack of the oldest unacked
    ops += bytes([73, 2, 0xFF])               # CAck up to next_unsent - 1
    ops += bytes([49, 5, 0xF0]) + b"max"      # Data at u64::MAX
    ops += bytes([7, 5, 0xC0])                # Ack of 2^63
    ops += bytes([0, 0, 0])                   # epochs
    ops += bytes([2, 0])                      # close, epoch
    return head + ops

for i, v in enumerate(EDGES):
    for client in (False, True):
        role = "client" if client else "server"
        write("conn", "isn-%s-%d" % (role, v), conn_seed(client, i, 4 << 2))
# Windows at the top of their range: u32::MAX and 2^31.
write("conn", "window-max", conn_seed(False, 1, (7 << 5) | 2))
write("conn", "window-2-31", conn_seed(True, 4, (4 << 5) | 2))
