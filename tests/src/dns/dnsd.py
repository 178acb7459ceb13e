"""A tiny DNS responder for the tests: every A question gets ADDR with TTL; UDP and TCP on BIND:53.
With MODE=garbage it answers every UDP query with bytes that are not a DNS message."""
import socket, struct, sys, threading

ADDR, TTL, BIND = sys.argv[1], int(sys.argv[2]), sys.argv[3]
MODE = sys.argv[4] if len(sys.argv) > 4 else "answer"


def answer(q):
    i = 12
    while q[i] != 0:
        i += q[i] + 1
    question = q[12:i + 5]
    hdr = q[:2] + b"\x81\x80" + struct.pack(">HHHH", 1, 1, 0, 0)
    rr = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, TTL, 4) + socket.inet_aton(ADDR)
    return hdr + question + rr


def udp(s):
    while True:
        q, a = s.recvfrom(512)
        s.sendto(b"\xde\xad\xbe\xef garbage" if MODE == "garbage" else answer(q), a)


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
