"""Malformed netlink datagrams at the nlperf module, as fast as they go.

Standard library only, configured by its arguments: the tests run it as root and as an
unprivileged user (who cannot import the project). Wire constants come from nlperf.wire as
JSON, so nothing here repeats the contract.

    python fuzz_datagrams.py WIRE_JSON COUNT SEED   → prints one JSON line of counts
"""

from __future__ import annotations

import errno
import json
import random
import socket
import struct
import sys
from collections import Counter
from collections.abc import Callable

HDR = struct.Struct("=IHHII")
U32 = (1 << 32) - 1


def _pad(b: bytes) -> bytes:
    return b + b"\0" * (-len(b) % 4)


class Fuzzer:
    def __init__(self, wire: dict, rnd: random.Random) -> None:
        self.w = wire
        self.r = rnd
        self.types = sorted(wire["types"].values())
        self.avoid = set(wire.get("avoid_types", ()))  # never sent, not even at random
        self.gen = struct.Struct(wire["gen_fmt"])
        self.relay = struct.Struct(wire["relay_fmt"])
        self.kinds: list[tuple[int, Callable[[], bytes]]] = [
            (6, self.random_bytes), (6, self.short_length), (6, self.length_beyond),
            (3, self.huge_length), (3, self.zero_length), (10, self.unknown_type),
            (20, self.known_type_junk), (10, self.absurd_relay), (6, self.absurd_generator),
            (10, self.bad_between_good), (6, self.misaligned_chain), (1, self.big_datagram),
        ]
        self.weights = [w for w, _ in self.kinds]

    def msg(self, mtype: int, payload: bytes, flags: int | None = None) -> bytes:
        if flags is None:
            flags = self.r.choice((0, 1, 1 | 4, self.r.getrandbits(16)))
        return _pad(HDR.pack(HDR.size + len(payload), mtype, flags, self.r.getrandbits(32), 0)
                    + payload)

    def junk(self, hi: int) -> bytes:
        return self.r.randbytes(self.r.randint(0, hi))

    def random_type(self) -> int:
        while True:
            t = self.r.getrandbits(16)
            if t not in self.avoid:
                return t

    def random_bytes(self) -> bytes:
        b = bytearray(self.junk(40))
        if len(b) >= 6 and struct.unpack_from("=H", b, 4)[0] in self.avoid:
            struct.pack_into("=H", b, 4, self.random_type())
        return bytes(b)

    def short_length(self) -> bytes:
        return HDR.pack(self.r.randint(0, HDR.size - 1), self.r.choice(self.types), 1, 0, 0) \
            + self.junk(32)

    def length_beyond(self) -> bytes:
        body = self.junk(64)
        return HDR.pack(HDR.size + len(body) + self.r.randint(1, 1 << 20),
                        self.r.choice(self.types), 1, 0, 0) + body

    def huge_length(self) -> bytes:
        return HDR.pack(U32, self.r.choice(self.types), 5, 0, 0) + self.junk(16)

    def zero_length(self) -> bytes:
        return HDR.pack(0, self.r.choice(self.types), 5, 0, 0)

    def unknown_type(self) -> bytes:
        return self.msg(self.random_type(), self.junk(64), self.r.getrandbits(16))

    def known_type_junk(self) -> bytes:
        # truncated stamps, stamps with a wrong version or size, control messages with junk
        mtype = self.r.choice(self.types)
        n = self.r.choice((0, 1, self.w["stamp_size"] - 1, self.w["stamp_size"],
                           self.r.randint(0, 300)))
        payload = bytearray(self.r.randbytes(n))
        return self.msg(mtype, bytes(payload))

    def absurd(self, st: struct.Struct) -> bytes:
        """The struct with every field 0, 1, all ones or random."""
        fields = []
        for code in st.format.lstrip("="):
            bits = struct.calcsize(code) * 8
            fields.append(self.r.choice((0, 1, (1 << bits) - 1, self.r.getrandbits(bits))))
        return st.pack(*fields)

    def absurd_relay(self) -> bytes:
        return self.msg(self.w["types"]["relay"],
                        self.absurd(self.relay) + self.junk(self.w["stamp_size"] + 8))

    def absurd_generator(self) -> bytes:
        start = self.msg(self.w["types"]["gen_start"], self.absurd(self.gen))
        # a valid absurd request may start an endless generator: stop it in the same datagram
        return start + self.msg(self.w["types"]["gen_stop"], b"", 1)

    def bad_between_good(self) -> bytes:
        good = self.msg(self.w["types"]["echo"], b"good", 1)
        bad = self.r.choice((self.short_length, self.unknown_type, self.known_type_junk))()
        return good + _pad(bad) + good

    def misaligned_chain(self) -> bytes:
        a = self.msg(self.w["types"]["sink"], self.junk(20), 1)
        b = bytearray(self.msg(self.w["types"]["echo"], self.junk(20), 1))
        struct.pack_into("=I", b, 0, len(b) + self.r.choice((-3, -1, 1, 2, 3)))
        return a + bytes(b) + a

    def big_datagram(self) -> bytes:
        one = self.msg(self.w["types"]["sink"], b"", 0)
        return one * self.r.randint(100, 4000)

    def datagram(self) -> bytes:
        return self.r.choices(self.kinds, self.weights)[0][1]()


def drain(s: socket.socket, c: Counter) -> None:
    while True:
        try:
            c["reply_bytes"] += len(s.recv(1 << 17))
        except BlockingIOError:
            return
        except OSError as e:  # ENOBUFS: our own receive queue overran; counted, not fatal
            c[f"recv_{errno.errorcode.get(e.errno, e.errno)}"] += 1


def main(argv: list[str]) -> int:
    wire, count, seed = json.loads(argv[0]), int(argv[1]), int(argv[2])
    fz = Fuzzer(wire, random.Random(seed))
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, wire["proto"])
    s.bind((0, 0))
    s.setblocking(False)
    c: Counter = Counter()
    for i in range(count):
        try:
            s.send(fz.datagram())
            c["sent"] += 1
        except OSError as e:
            c[f"send_{errno.errorcode.get(e.errno, e.errno)}"] += 1
        if i % 32 == 0:
            drain(s, c)
    drain(s, c)
    s.close()
    print(json.dumps(dict(c)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
