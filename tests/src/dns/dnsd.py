"""A tiny DNS responder for the tests, UDP and TCP on BIND:53: every A question gets ADDR, every
AAAA question ADDR6 (if given), with TTL; a name starting with `alias.` is answered with a CNAME to
`real.test` and then the address. With MODE=garbage it answers every UDP query with bytes that are
not a DNS message (but carry the query's id, so that they answer its transaction)."""
import socket, struct, sys, threading

ADDR, TTL, BIND = sys.argv[1], int(sys.argv[2]), sys.argv[3]
MODE = sys.argv[4] if len(sys.argv) > 4 else "answer"
ADDR6 = sys.argv[5] if len(sys.argv) > 5 else None


def encode(name):
    return b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\x00"


def answer(q):
    i = 12
    while q[i] != 0:
        i += q[i] + 1
    question = q[12:i + 5]
    qtype = struct.unpack(">H", q[i + 1:i + 3])[0]
    if qtype == 28 and ADDR6:
        data = struct.pack(">HHIH", 28, 1, TTL, 16) + socket.inet_pton(socket.AF_INET6, ADDR6)
    elif qtype == 1:
        data = struct.pack(">HHIH", 1, 1, TTL, 4) + socket.inet_aton(ADDR)
    else:
        return q[:2] + b"\x81\x80" + struct.pack(">HHHH", 1, 0, 0, 0) + question
    records = [b"\xc0\x0c" + data]
    if q[12:18] == b"\x05alias":
        target = encode("real.test")
        records = [
            b"\xc0\x0c" + struct.pack(">HHIH", 5, 1, TTL, len(target)) + target,
            target + data,
        ]
    hdr = q[:2] + b"\x81\x80" + struct.pack(">HHHH", 1, len(records), 0, 0)
    return hdr + question + b"".join(records)


def udp(s):
    while True:
        q, a = s.recvfrom(512)
        s.sendto(q[:2] + b"\xbe\xef garbage" if MODE == "garbage" else answer(q), a)


def tcp(s):
    while True:
        c, _ = s.accept()
        n = struct.unpack(">H", c.recv(2))[0]
        r = answer(c.recv(n))
        c.sendall(struct.pack(">H", len(r)) + r)
        c.close()


u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.bind((BIND, 53))
t = socket.socket()
t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
t.bind((BIND, 53))
t.listen(5)
print("listening", flush=True)
threading.Thread(target=tcp, args=(t,), daemon=True).start()
udp(u)
