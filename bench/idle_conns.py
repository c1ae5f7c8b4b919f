"""Opens N keep-alive connections to a proxy, sends one request on each, reads the
answer, and holds them idle until stdin closes. Prints 'ready N' when all are open."""
import socket
import sys

host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
conns = []
req = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
for i in range(n):
    s = socket.create_connection((host, port))
    s.sendall(req)
    conns.append(s)
for s in conns:
    s.settimeout(10)
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(4096)
print(f"ready {len(conns)}", flush=True)
sys.stdin.read()
