#!/usr/bin/env python3
"""A fixed, repeatable HTTP/1.1 client for loadtests/callgrind.sh.

Sends COUNT GET requests on ONE keep-alive connection, one at a time (no
pipelining), each with the same browser headers as proxy-baseline.sh's Lua
script and the session cookie of one of SESSIONS sessions in turn, and
reads each response whole (Content-Length framing). Exits non-zero when a
response is not 200 or the connection closes early, so a profile is never
taken of refusals by accident.

    callgrind-client.py HOST:PORT VHOST COUNT [SESSIONS] [FIRST]
"""
import socket
import sys

UA = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
      "(KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36")


def main() -> int:
    addr, vhost, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    sessions = int(sys.argv[4]) if len(sys.argv) > 4 else 1000
    first = int(sys.argv[5]) if len(sys.argv) > 5 else 0
    host, port = addr.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = b""
    for i in range(first, first + count):
        sid = i % sessions
        req = (
            f"GET / HTTP/1.1\r\nHost: {vhost}\r\nUser-Agent: {UA}\r\n"
            "Accept-Language: en-GB,en;q=0.9\r\n"
            f"Cookie: _ga=GA1.2.12345.67890; session=s{sid}; theme=dark\r\n\r\n"
        ).encode()
        sock.sendall(req)
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                print(f"connection closed after {i - first} responses", file=sys.stderr)
                return 1
            buf += chunk
        head, buf = buf.split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        status = lines[0].split(b" ")[1]
        if status != b"200":
            print(f"response {i - first}: {lines[0].decode()}", file=sys.stderr)
            return 1
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        while len(buf) < length:
            chunk = sock.recv(65536)
            if not chunk:
                print("connection closed mid-body", file=sys.stderr)
                return 1
            buf += chunk
        buf = buf[length:]
    sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
