"""hostile_http_conns.py — slow HTTP clients against riklet's HTTP server (test_hostile_http.sh).

  hostile_http_conns.py HOST PORT MODE N SECONDS
    MODE headers: N connections each sending a request's headers one byte every 2 s (never done)
    MODE body:    N connections each sending complete headers (Content-Length: 100000) then the
                  body one byte every 2 s
  Prints, after SECONDS, "open=K closed=M answered503=A": how many connections the server still
  holds open, how many it closed (EOF, reset or a refused write) and how many of those it answered
  503 first (the connection cap). Exits 0.
"""
import socket
import sys
import time

host, port, mode, n, seconds = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
head = b"POST /create HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
socks, closed, answered503 = [], 0, 0
for _ in range(n):
    s = socket.create_connection((host, port), timeout=60)  # a loaded server accepts late
    s.setblocking(False)
    if mode == "body":
        s.sendall(head)
    socks.append([s, 0])
end = time.monotonic() + seconds
while time.monotonic() < end:
    for ent in socks:
        s, pos = ent
        if s is None:
            continue
        gone = False
        try:
            got = s.recv(4096)
            if got == b"":
                gone = True
            elif got.startswith(b"HTTP/1.1 503 "):
                answered503 += 1
        except BlockingIOError:
            pass
        except OSError:
            gone = True
        if not gone:
            try:
                s.send(head[pos:pos + 1] if mode == "headers" else b"x")
                ent[1] = min(pos + 1, len(head) - 5)  # never the final CRLF CRLF
            except BlockingIOError:
                pass
            except OSError:
                gone = True
        if gone:
            s.close()
            ent[0] = None
            closed += 1
    time.sleep(2)
print("open=%d closed=%d answered503=%d" % (sum(1 for e in socks if e[0] is not None), closed, answered503))
sys.stdout.flush()
