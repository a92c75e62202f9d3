#!/usr/bin/env python3
"""A fixed, repeatable HTTP/1.1 client for loadtests/callgrind.sh.

Sends COUNT GET requests on ONE keep-alive connection, one at a time (no
pipelining), each with the same browser headers as proxy-baseline.sh's Lua
script and the session cookie of one of SESSIONS sessions in turn, and
reads each response whole (Content-Length framing). Exits non-zero when a
response is not 200 or the connection closes early, so a profile is never
taken of refusals by accident.

    callgrind-client.py [--tls] [--close [--no-resume]] HOST:PORT VHOST COUNT [SESSIONS] [FIRST]

--tls speaks TLS 1.3 (SNI VHOST, certificate not checked); --close sends
every request on a connection of its own with `Connection: close`, over TLS
resuming the previous connection's session (--no-resume: a full handshake
every time).
"""
import socket
import ssl
import sys

UA = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
      "(KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36")


def main() -> int:
    flags = {a for a in sys.argv[1:] if a.startswith("--")}
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    tls, close, resume = "--tls" in flags, "--close" in flags, "--no-resume" not in flags
    addr, vhost, count = args[0], args[1], int(args[2])
    sessions = int(args[3]) if len(args) > 3 else 1000
    first = int(args[4]) if len(args) > 4 else 0
    host, port = addr.rsplit(":", 1)
    context = None
    if tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        context.set_alpn_protocols(["http/1.1"])
    session = None

    def connect():
        sock = socket.create_connection((host, int(port)))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if context is not None:
            sock = context.wrap_socket(sock, server_hostname=vhost,
                                       session=session if resume else None)
        return sock

    sock = connect()
    reused = 0
    buf = b""
    for i in range(first, first + count):
        sid = i % sessions
        req = (
            f"GET / HTTP/1.1\r\nHost: {vhost}\r\nUser-Agent: {UA}\r\n"
            "Accept-Language: en-GB,en;q=0.9\r\n"
            f"Cookie: _ga=GA1.2.12345.67890; session=s{sid}; theme=dark\r\n"
            + ("Connection: close\r\n" if close else "") + "\r\n"
        ).encode()
        if close and i > first:
            sock.close()
            sock = connect()
            buf = b""
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
        if close and context is not None:
            # TLS 1.3 tickets arrive after the handshake: the session to
            # resume is the one this connection holds once it has read.
            session = sock.session
            reused += sock.session_reused
    sock.close()
    if close and context is not None:
        print(f"{reused} of {count} TLS connections resumed", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
