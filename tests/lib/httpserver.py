#!/usr/bin/python3
"""A real HTTP/1.1 file server for riklet's download tests (Python's http.server, threaded).

Serves the files of --dir with Content-Length, ETag ("<mtime_ns>-<size>", or the content of
NAME.etag when it exists) and Last-Modified, and answers If-None-Match / If-Modified-Since with
304. Every request is logged to --log as one line "METHOD PATH STATUS" (tests count GETs there).
Per-path misbehaviour is read from DIR/.modes.json on every request, so a test changes it live:
  {"/cut.img": {"cut": 1000}}      announce the full length, close after 1000 body bytes
  {"/slow.img": {"rate": 2000}}    send 2000 bytes/s
  {"/x.img": {"delay": 1.5}}       wait 1.5 s before answering (to overlap concurrent fetches)
  {"/x.img": {"no_validators": true}}  no ETag and no Last-Modified
  {"/x.img": {"chunked": true}}    Transfer-Encoding: chunked, no Content-Length
With --unix PATH it also serves an echo API on that unix socket: any method answers 200 with
{"method":..., "path":..., "body":..., "content_type":...} (a 400 with a fault_message for a path
ending in /fail).
"""
import argparse
import email.utils
import http.server
import json
import os
import socketserver
import sys
import threading
import time

args = None
log_lock = threading.Lock()


def modes_for(path):
    try:
        with open(os.path.join(args.dir, ".modes.json")) as f:
            return json.load(f).get(path, {})
    except (OSError, ValueError):
        return {}


def log_line(method, path, status):
    with log_lock, open(args.log, "a") as f:
        f.write("%s %s %d\n" % (method, path, status))


class FileHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *a):
        pass

    def do_HEAD(self):
        self.serve(head=True)

    def do_GET(self):
        self.serve(head=False)

    def serve(self, head):
        path = self.path.split("?", 1)[0]
        m = modes_for(path)
        if m.get("delay"):
            time.sleep(float(m["delay"]))
        name = os.path.normpath(os.path.join(args.dir, path.lstrip("/")))
        if not name.startswith(os.path.abspath(args.dir) + "/") or not os.path.isfile(name) \
                or os.path.basename(name).startswith("."):
            body = b"no such file\n"
            log_line(self.command, path, 404)  # before answering: a test reads the log once answered
            self.send_response(404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)
            return
        st = os.stat(name)
        etag = '"%d-%d"' % (st.st_mtime_ns, st.st_size)
        if os.path.exists(name + ".etag"):
            with open(name + ".etag") as f:
                etag = f.read().strip()
        lm = email.utils.formatdate(st.st_mtime, usegmt=True)
        validators = not m.get("no_validators")
        inm = self.headers.get("If-None-Match")
        ims = self.headers.get("If-Modified-Since")
        fresh = False
        if validators and inm is not None:
            fresh = inm == etag
        elif validators and ims is not None:
            try:
                fresh = int(st.st_mtime) <= email.utils.parsedate_to_datetime(ims).timestamp()
            except (TypeError, ValueError):
                fresh = False
        if fresh:
            log_line(self.command, path, 304)
            self.send_response(304)
            self.send_header("ETag", etag)
            self.end_headers()
            return
        log_line(self.command, path, 200)
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        if validators:
            self.send_header("ETag", etag)
            self.send_header("Last-Modified", lm)
        chunked = m.get("chunked")
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(st.st_size))
        if "cut" in m:
            self.send_header("Connection", "close")
        self.end_headers()
        if head:
            return
        limit = int(m.get("cut", st.st_size))
        rate = m.get("rate")
        sent = 0
        with open(name, "rb") as f:
            while sent < limit:
                n = min(65536, limit - sent)
                if rate:
                    n = min(n, max(1, int(rate) // 10))
                data = f.read(n)
                if not data:
                    break
                if chunked:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                else:
                    self.wfile.write(data)
                sent += len(data)
                if rate:
                    time.sleep(0.1)
        if chunked and sent >= st.st_size:
            self.wfile.write(b"0\r\n\r\n")
        if "cut" in m:
            self.wfile.flush()
            self.close_connection = True


class EchoHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *a):
        pass

    def address_string(self):
        return "unix"

    def handle_any(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n).decode() if n else ""
        if self.path.endswith("/fail"):
            code, out = 400, {"fault_message": "the echo server refuses %s" % self.path}
        else:
            code, out = 200, {"method": self.command, "path": self.path, "body": body,
                              "content_type": self.headers.get("Content-Type")}
        data = json.dumps(out).encode()
        log_line(self.command, self.path, code)
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_PUT = do_PATCH = do_POST = do_DELETE = handle_any


class Quiet:
    def handle_error(self, request, client_address):
        pass  # a client that hangs up early (cancel, cap, timeout) is what the tests do


class TCPServer(Quiet, http.server.ThreadingHTTPServer):
    daemon_threads = True


class UnixServer(Quiet, socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def main():
    global args
    p = argparse.ArgumentParser()
    p.add_argument("--dir", required=True)
    p.add_argument("--port-file", required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--unix")
    args = p.parse_args()
    args.dir = os.path.abspath(args.dir)
    srv = TCPServer(("127.0.0.1", 0), FileHandler)
    if args.unix:
        if os.path.exists(args.unix):
            os.unlink(args.unix)
        usrv = UnixServer(args.unix, EchoHandler)
        threading.Thread(target=usrv.serve_forever, daemon=True).start()
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write("%d\n" % srv.server_address[1])
    os.rename(tmp, args.port_file)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
