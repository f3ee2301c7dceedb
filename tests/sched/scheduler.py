#!/usr/bin/python3
"""A RIK scheduler stand-in for riklet's tests, written from shared/PROTOCOL.md with Debian's grpcio.

It behaves like upstream's worker service:
  - Register(WorkerRegistration) -> stream InstanceScheduling: FAILED_PRECONDITION on an empty
    hostname, ALREADY_EXISTS while the same hostname still has an open stream; headers are sent at
    once (as tonic does; --lazy-headers: only with the first instruction, grpcio's own default),
    instructions are streamed as the test asks for them.
  - SendStatusUpdates(stream WorkerStatus) -> Empty: takes one or many messages per call and records
    each as it arrives.

The test drives it through a small HTTP control port on 127.0.0.1 (JSON in, JSON out):
  POST /instruct   {"worker": host|null, "instance_id", "definition", "action": "CREATE"|"DESTROY"}
  POST /misbehave  {"worker": host|null, "mode": "garbage"|"oversized"|"end"|"abort"}
                   or {"mode": "raw", "data_b64": ...}: those bytes as the next stream message
  GET  /state      {"workers": {host: {"open", "registrations"}}, "events": n, "status_calls": n}
  GET  /events?since=N   JSON lines of received statuses with seq > N
Every received status is also appended to --events FILE as one JSON line, as is every instruction
the moment it is handed to the stream (kind "sent"), so latencies can be measured on one clock.

--raw MODE runs a hand-rolled HTTP/2 server instead that answers every call with a broken gRPC
response once the request is complete (MODE: truncated | compressed | badflag | nostatus | http500),
or a trailers-only UNIMPLEMENTED on the request headers alone, before the request body (early), for
the client's error paths,
or a peer that is no gRPC server at all: silent (accepts, never sends a byte), close (accepts and
closes at once), http1 (answers the client preface with an HTTP/1.1 400), noheaders (HTTP/2
SETTINGS and PING acks, never a response), noping (the same without PING acks: a hung server
process whose kernel still acknowledges), garbage (sends "hello" on accept, then nothing),
bigframe (answers a request with a 5 MiB HTTP/2 DATA frame: 320 times the 16 KiB a client
accepts), bigmsg (a well-formed response whose gRPC message prefix announces 4 GiB - 16 bytes,
followed by 1 MiB of its body), goaway (a GOAWAY ENHANCE_YOUR_CALM whose debug data holds an
escape and a newline), rst (RST_STREAM REFUSED_STREAM), hugeheaders (a header block that never
ends: a 64 MiB header value in CONTINUATION frames), manyheaders (100,000 CONTINUATION frames of
tiny headers), evilmsg (a grpc-message whose escapes decode to a newline, an ESC and a NUL). Each
accepted connection is logged to --events as
{"kind": "accept"}.

Usage: scheduler.py --port-file F [--port P] [--events FILE] [--tls-cert C --tls-key K] [--raw MODE]
Writes {"grpc": port, "control": port} to the port file once listening.
"""
import argparse
import base64
import json
import os
import queue
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_DIR = os.path.join(HERE, "..", "..", "proto")


def load_stubs():
    """protoc --python_out at run time from the repo's own .proto files (one source of truth)."""
    out = tempfile.mkdtemp(prefix="riklet-sched-pb-")
    subprocess.run(["protoc", "--proto_path=" + PROTO_DIR, "--proto_path=/usr/include",
                    "--python_out=" + out, "common.proto", "worker.proto"], check=True)
    sys.path.insert(0, out)
    import common_pb2  # noqa: E402
    import worker_pb2  # noqa: E402
    return common_pb2, worker_pb2


class State:
    def __init__(self, events_path):
        self.lock = threading.Condition()
        self.workers = {}  # host -> Worker
        self.events = []
        self.status_calls = 0
        self.events_file = open(events_path, "a", buffering=1) if events_path else None

    def record(self, ev):
        with self.lock:
            ev["seq"] = len(self.events) + 1
            ev["t"] = time.time()
            self.events.append(ev)
            if self.events_file:
                self.events_file.write(json.dumps(ev) + "\n")
            self.lock.notify_all()


class Worker:
    def __init__(self, host):
        self.host = host
        self.q = queue.Queue()
        self.open = True
        self.registrations = 0


def serve_grpc(args, st):
    import grpc
    common_pb2, worker_pb2 = load_stubs()
    from google.protobuf import empty_pb2

    status_name = common_pb2.ResourceStatus.Name

    def register(req, ctx):
        host = req.hostname
        if not host:
            ctx.abort(grpc.StatusCode.FAILED_PRECONDITION, "Hostname must be provided")
        with st.lock:
            w = st.workers.get(host)
            if w is not None and w.open:
                ctx.abort(grpc.StatusCode.ALREADY_EXISTS, "Worker %s already registered" % host)
            if w is None:
                w = Worker(host)
                st.workers[host] = w
            w.open = True
            w.q = queue.Queue()
            w.registrations += 1
            wq = w.q

        def closed():
            with st.lock:
                if w.q is wq:
                    w.open = False
        ctx.add_callback(closed)
        if not args.lazy_headers:
            ctx.send_initial_metadata(())
        st.record({"kind": "register", "identifier": host})
        while ctx.is_active():
            try:
                item = wq.get(timeout=0.1)
            except queue.Empty:
                continue
            if isinstance(item, dict):
                mode = item["mode"]
                if mode == "garbage":
                    yield b"\xff\xff\xff\xff\xff garbage, not protobuf"
                elif mode == "raw":
                    yield item["data"]
                elif mode == "oversized":
                    m = worker_pb2.InstanceScheduling(instance_id="big", definition="x" * (5 << 20))
                    yield m
                elif mode == "end":
                    return
                elif mode == "abort":
                    ctx.abort(grpc.StatusCode.INTERNAL, "scheduler aborted the stream on request")
                continue
            st.record({"kind": "sent", "identifier": host, "instance_id": item.instance_id,
                       "action": common_pb2.WorkloadRequestKind.Name(item.action)})
            yield item

    def send_status_updates(it, ctx):
        with st.lock:
            st.status_calls += 1
        for ws in it:
            ev = {"identifier": ws.identifier, "has_host_address": ws.HasField("host_address")}
            which = ws.WhichOneof("status")
            if which == "instance":
                ev.update(kind="instance", instance_id=ws.instance.instance_id,
                          status=status_name(ws.instance.status), metrics=ws.instance.metrics)
            elif which == "worker":
                ev.update(kind="worker", status=status_name(ws.worker.status),
                          metrics=ws.worker.metrics)
            else:
                ev.update(kind="none")
            st.record(ev)
        return empty_pb2.Empty()

    def ser(m):
        return m if isinstance(m, bytes) else m.SerializeToString()

    handler = grpc.method_handlers_generic_handler("worker.Worker", {
        "Register": grpc.unary_stream_rpc_method_handler(
            register, request_deserializer=common_pb2.WorkerRegistration.FromString,
            response_serializer=ser),
        "SendStatusUpdates": grpc.stream_unary_rpc_method_handler(
            send_status_updates, request_deserializer=common_pb2.WorkerStatus.FromString,
            response_serializer=ser),
    })
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=64),
                         options=[("grpc.max_send_message_length", 64 << 20),
                                  ("grpc.max_receive_message_length", 64 << 20),
                                  ("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((handler,))
    addr = "127.0.0.1:%d" % args.port
    if args.tls_cert:
        with open(args.tls_cert, "rb") as f:
            cert = f.read()
        with open(args.tls_key, "rb") as f:
            key = f.read()
        ca = None
        if args.tls_client_ca:
            with open(args.tls_client_ca, "rb") as f:
                ca = f.read()
        creds = grpc.ssl_server_credentials([(key, cert)], root_certificates=ca,
                                            require_client_auth=bool(ca))
        port = server.add_secure_port(addr, creds)
    else:
        port = server.add_insecure_port(addr)
    if not port:
        sys.exit("scheduler: cannot listen on %s" % addr)
    server.start()
    return server, port


# ---- raw HTTP/2: broken gRPC responses ----------------------------------------------------------

def h2_frame(ftype, flags, sid, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", sid) + payload


def hpack_literal(name, value):
    """Literal header field without indexing, new name, no Huffman (RFC 7541 6.2.2)."""
    def s(b):
        assert len(b) < 127
        return bytes([len(b)]) + b
    return b"\x00" + s(name.encode()) + s(value.encode())


def raw_conn(conn, mode):
    conn.settimeout(30)
    buf = b""
    try:
        if mode == "close":
            return
        if mode == "garbage":
            conn.sendall(b"hello")
            conn.settimeout(None)
            while conn.recv(65536):
                pass
            return
        if mode == "silent":
            conn.settimeout(None)
            while conn.recv(65536):
                pass
            return
        if mode == "http1":
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n"
                         b"Connection: close\r\n\r\nBad Request")
            return
        if mode in ("noheaders", "noping"):
            conn.settimeout(None)
        while len(buf) < 24:
            d = conn.recv(65536)
            if not d:
                return
            buf += d
        buf = buf[24:]  # client preface
        conn.sendall(h2_frame(4, 0, 0))  # SETTINGS
        pending = set()  # streams whose request has not ended yet
        while True:
            while len(buf) < 9:
                d = conn.recv(65536)
                if not d:
                    return
                buf += d
            ln = int.from_bytes(buf[0:3], "big")
            ftype, flags = buf[3], buf[4]
            sid = int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
            while len(buf) < 9 + ln:
                d = conn.recv(65536)
                if not d:
                    return
                buf += d
            payload, buf = buf[9:9 + ln], buf[9 + ln:]
            if ftype == 4 and not flags & 1:
                conn.sendall(h2_frame(4, 1, 0))  # SETTINGS ack
            elif ftype == 6 and not flags & 1:
                if mode != "noping":
                    conn.sendall(h2_frame(6, 1, 0, payload))  # PING ack
            elif ftype == 1 and mode in ("noheaders", "noping"):
                pass
            elif ftype == 1 and mode == "bigframe":
                big = 5 << 20
                conn.sendall(struct.pack(">I", big)[1:] + bytes([0, 0]) + struct.pack(">I", sid))
                chunk = b"x" * 65536
                for _ in range(big // len(chunk)):
                    conn.sendall(chunk)
            elif ftype == 1 and mode == "bigmsg":
                hdr = hpack_literal(":status", "200") + hpack_literal("content-type", "application/grpc")
                conn.sendall(h2_frame(1, 4, sid, hdr))
                body = b"\x00" + struct.pack(">I", 0xFFFFFFF0) + b"y" * (16384 - 5)
                conn.sendall(h2_frame(0, 0, sid, body))
                for _ in range(63):
                    conn.sendall(h2_frame(0, 0, sid, b"y" * 16384))
            elif ftype == 1 and mode == "goaway":  # GOAWAY (ENHANCE_YOUR_CALM) with debug data, kept open
                conn.sendall(h2_frame(7, 0, 0, struct.pack(">II", 0, 11) + b"calm down\x1b[31m\nforged"))
            elif ftype == 1 and mode == "rst":  # RST_STREAM (REFUSED_STREAM) on every call
                conn.sendall(h2_frame(3, 0, sid, struct.pack(">I", 7)))
            elif ftype == 1 and mode == "hugeheaders":  # a header block that never ends: CONTINUATION flood
                hdr = hpack_literal(":status", "200") + hpack_literal("content-type", "application/grpc")
                n, vlen = 64 << 20, b"\x7f"  # one header value of 64 MiB (HPACK integer, 7-bit prefix)
                rest = n - 127
                while rest >= 128:
                    vlen += bytes([rest % 128 + 128])
                    rest //= 128
                vlen += bytes([rest])
                conn.sendall(h2_frame(1, 0, sid, hdr + b"\x00\x05x-big" + vlen))  # no END_HEADERS
                conn.settimeout(5)
                for _ in range(4096):  # its 64 MiB, 16 KiB a CONTINUATION frame
                    conn.sendall(h2_frame(9, 0, sid, b"v" * 16384))
            elif ftype == 1 and mode == "manyheaders":  # CONTINUATION frames of tiny indexed headers
                hdr = hpack_literal(":status", "200") + hpack_literal("content-type", "application/grpc")
                conn.sendall(h2_frame(1, 0, sid, hdr))
                conn.settimeout(5)
                for _ in range(100000):
                    conn.sendall(h2_frame(9, 0, sid, b"\x88" * 64))  # :status 200, again and again
            elif ftype == 1 and mode == "evilmsg":  # a grpc-message whose escapes decode to a newline, ESC, NUL
                hdr = (hpack_literal(":status", "200") + hpack_literal("content-type", "application/grpc")
                       + hpack_literal("grpc-status", "13")
                       + hpack_literal("grpc-message", "no%0a2099-01-01 forged%1b[31m%00cut"))
                conn.sendall(h2_frame(1, 5, sid, hdr))
            elif ftype == 1 and mode == "early":  # answer before the request body
                hdr = (hpack_literal(":status", "200") + hpack_literal("content-type", "application/grpc")
                       + hpack_literal("grpc-status", "12") + hpack_literal("grpc-message", "unknown method"))
                conn.sendall(h2_frame(1, 5, sid, hdr))  # trailers-only: END_HEADERS | END_STREAM
            elif ftype == 1 and not flags & 1:
                pending.add(sid)  # answer once the request ends, as a gRPC server does
            elif ftype == 1 or (ftype == 0 and flags & 1 and sid in pending):  # the request ended
                pending.discard(sid)
                status = "500" if mode == "http500" else "200"
                hdr = hpack_literal(":status", status) + hpack_literal("content-type", "application/grpc")
                out = h2_frame(1, 4, sid, hdr)  # END_HEADERS
                if mode == "truncated":
                    body = b"\x00" + struct.pack(">I", 100) + b"only ten b"
                elif mode == "compressed":
                    body = b"\x01" + struct.pack(">I", 3) + b"abc"
                elif mode == "badflag":
                    body = b"\x80garbage bytes where a gRPC frame should be"
                else:
                    body = b""
                if mode == "http500":
                    out += h2_frame(0, 1, sid, b"oops")
                elif mode == "nostatus":
                    out += h2_frame(0, 1, sid, b"")
                else:
                    out += h2_frame(0, 0, sid, body)
                    out += h2_frame(1, 5, sid, hpack_literal("grpc-status", "0"))  # trailers, END_STREAM
                conn.sendall(out)
    except OSError:
        pass
    finally:
        conn.close()


def serve_raw(args, st):
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", args.port))
    ls.listen(16)

    def loop():
        while True:
            c, _ = ls.accept()
            st.record({"kind": "accept", "mode": args.raw})
            threading.Thread(target=raw_conn, args=(c, args.raw), daemon=True).start()
    threading.Thread(target=loop, daemon=True).start()
    return ls.getsockname()[1]


# ---- control port ------------------------------------------------------------------------------

def serve_control(st, worker_pb2_getter):
    class H(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def reply(self, code, obj, lines=False):
            body = ("".join(json.dumps(o) + "\n" for o in obj) if lines else json.dumps(obj) + "\n").encode()
            self.send_response(code)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            u = urlparse(self.path)
            if u.path == "/state":
                with st.lock:
                    self.reply(200, {"workers": {h: {"open": w.open, "registrations": w.registrations}
                                                 for h, w in st.workers.items()},
                                     "events": len(st.events), "status_calls": st.status_calls})
            elif u.path == "/events":
                since = int(parse_qs(u.query).get("since", ["0"])[0])
                with st.lock:
                    evs = [e for e in st.events if e["seq"] > since]
                self.reply(200, evs, lines=True)
            else:
                self.reply(404, {"error": "no such path"})

        def do_POST(self):
            n = int(self.headers.get("content-length", "0"))
            try:
                req = json.loads(self.rfile.read(n) or b"{}")
            except ValueError as e:
                return self.reply(400, {"error": "bad JSON: %s" % e})
            with st.lock:
                ws = [w for h, w in st.workers.items() if w.open and req.get("worker") in (None, h)]
            if not ws:
                return self.reply(409, {"error": "no open worker stream"})
            if self.path == "/instruct":
                pb = worker_pb2_getter()
                items = req.get("batch") or [req]
                for w in ws:
                    for it in items:
                        w.q.put(pb.InstanceScheduling(
                            instance_id=it["instance_id"], definition=it.get("definition", ""),
                            action=it.get("action", "CREATE")))
                self.reply(200, {"sent_to": [w.host for w in ws], "count": len(items)})
            elif self.path == "/misbehave":
                for w in ws:
                    w.q.put({"mode": req["mode"], "data": base64.b64decode(req.get("data_b64", ""))})
                self.reply(200, {"sent_to": [w.host for w in ws]})
            else:
                self.reply(404, {"error": "no such path"})

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv.server_address[1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--events")
    ap.add_argument("--tls-cert")
    ap.add_argument("--tls-key")
    ap.add_argument("--tls-client-ca")
    ap.add_argument("--raw", choices=["evilmsg", "goaway", "rst", "hugeheaders", "manyheaders", "truncated", "compressed", "badflag", "nostatus", "http500",
                                      "silent", "close", "http1", "noheaders", "early", "garbage", "bigframe", "noping",
                                      "bigmsg"])
    ap.add_argument("--lazy-headers", action="store_true",
                    help="Register sends its response headers only with the first instruction")
    args = ap.parse_args()
    st = State(args.events)
    if args.raw:
        gport = serve_raw(args, st)
        cport = 0
    else:
        _server, gport = serve_grpc(args, st)
        import worker_pb2
        cport = serve_control(st, lambda: worker_pb2)
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"grpc": gport, "control": cport, "pid": os.getpid()}, f)
    os.rename(tmp, args.port_file)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
