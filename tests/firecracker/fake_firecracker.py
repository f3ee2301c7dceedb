#!/usr/bin/python3
"""A stand-in `firecracker` that holds the VMM's side of the API conversation, checked against
Firecracker's own Swagger description (firecracker-api-v1.16.1.yaml beside this file).

Serves HTTP/1.1 on --api-sock. EVERY request is checked: the path must match one of the spec's
paths, the method must be one the spec lists for it, a body must be JSON that validates against
the body parameter's schema (Swagger 2.0 definitions = JSON Schema draft 4; objects are checked
strictly, unknown fields refused, as Firecracker's own parser does), and the path's {id} must equal
the body's id field. A request that fails is answered 400 with a fault_message, as Firecracker
does. Firecracker's order rules are kept: pre-boot resources only before InstanceStart,
InstanceStart only with a boot source, SendCtrlAltDel only once started.

Each request is appended to $FAKE_FC_LOG (default: fake-firecracker.log beside the API socket) as
one JSON line {method, path, body, status, valid, problem, sock}. Knobs, from the environment or from
fake-firecracker.json beside the API socket ({"FAKE_FC_FAIL": ...}, read at start):
  FAKE_FC_FAIL="PUT /boot-source"   answer that request 400 {"fault_message": $FAKE_FC_FAULT}
  FAKE_FC_IGNORE_CAD=1              the guest ignores Ctrl-Alt-Del (riklet must kill after grace)
  FAKE_FC_CRASH_AFTER=SECONDS       exit with code 3 that long after InstanceStart (a VMM crash)
  FAKE_FC_POWEROFF_AFTER=SECONDS    exit 0 that long after InstanceStart (the guest powered off)
  FAKE_FC_PANIC_AFTER=SECONDS       print a kernel panic and exit 0 (panic=1 reboot=k: Firecracker
                                    ends with 0 when its guest reboots after a panic)
On InstanceStart it prints a console line naming the kernel, drive and TAP; on Ctrl-Alt-Del the
"guest" powers off and the process exits 0, as Firecracker does when its guest stops.
"""
import copy
import json
import os
import re
import signal
import socketserver
import http.server
import sys
import threading
import time

import jsonschema
import yaml

HERE = os.path.dirname(os.path.realpath(__file__))
SPEC_PATH = os.environ.get("FAKE_FC_SPEC", os.path.join(HERE, "firecracker-api-v1.16.1.yaml"))
SPEC = yaml.safe_load(open(SPEC_PATH))


def strict(schema):
    """Refuse unknown properties in every object schema (Firecracker: serde deny_unknown_fields)."""
    if isinstance(schema, dict):
        if schema.get("type") == "object" and "properties" in schema and "additionalProperties" not in schema:
            schema["additionalProperties"] = False
        for v in schema.values():
            strict(v)
    elif isinstance(schema, list):
        for v in schema:
            strict(v)
    return schema


STRICT = strict(copy.deepcopy(SPEC))
ROUTES = []
for tmpl, ops in SPEC["paths"].items():
    rx = "^" + re.sub(r"\{([^}]+)\}", r"(?P<\1>[^/]+)", tmpl) + "$"
    ROUTES.append((re.compile(rx), tmpl, ops))

state = {"started": False, "boot": None, "machine": {"vcpu_count": 1, "mem_size_mib": 128, "smt": False},
         "drives": {}, "ifaces": {}}
lock = threading.Lock()
PRE_BOOT = {"/machine-config", "/boot-source", "/drives/{drive_id}", "/network-interfaces/{iface_id}",
            "/logger", "/metrics", "/cpu-config", "/vsock", "/entropy", "/serial", "/balloon", "/mmds/config"}


def console(msg):
    sys.stdout.write(msg + "\n")
    sys.stdout.flush()


KNOBS = {}
SOCK = None


def knob(name):
    return KNOBS.get(name, os.environ.get(name))


def log(entry):
    p = knob("FAKE_FC_LOG")
    if p:
        with lock, open(p, "a") as f:
            f.write(json.dumps(entry) + "\n")


def validate(method, path, raw):
    """-> (template, params, body, problem)"""
    for rx, tmpl, ops in ROUTES:
        m = rx.match(path)
        if not m:
            continue
        op = ops.get(method.lower())
        if not op:
            return tmpl, m.groupdict(), None, "%s is not a method of %s in the API" % (method, tmpl)
        body_param = next((p for p in op.get("parameters", []) if p.get("in") == "body"), None)
        body = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError as e:
                return tmpl, m.groupdict(), None, "the body is not JSON: %s" % e
        if body_param is None:
            if raw:
                return tmpl, m.groupdict(), body, "%s %s takes no body" % (method, tmpl)
            return tmpl, m.groupdict(), body, None
        if body is None:
            if body_param.get("required"):
                return tmpl, m.groupdict(), None, "%s %s needs a JSON body" % (method, tmpl)
            return tmpl, m.groupdict(), None, None
        schema = dict(body_param["schema"])
        schema["definitions"] = STRICT["definitions"]
        try:
            jsonschema.Draft4Validator(schema).validate(body)
        except jsonschema.ValidationError as e:
            where = "/".join(str(x) for x in e.absolute_path) or "(body)"
            return tmpl, m.groupdict(), body, "body does not match the schema at %s: %s" % (where, e.message)
        for k, v in m.groupdict().items():
            if isinstance(body, dict) and k in body and body[k] != v:
                return tmpl, m.groupdict(), body, "%s in the path (%s) differs from the body's (%s)" % (k, v, body[k])
        return tmpl, m.groupdict(), body, None
    return None, {}, None, "no such path in the API: %s" % path


def later(seconds, fn):
    t = threading.Timer(seconds, fn)
    t.daemon = True
    t.start()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *a):
        pass

    def address_string(self):
        return "api-sock"

    def reply(self, code, obj=None):
        data = json.dumps(obj).encode() if obj is not None else b""
        self.send_response(code)
        if data:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if data:
            self.wfile.write(data)

    def handle_any(self):
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n).decode("utf-8", "replace") if n else ""
        method, path = self.command, self.path
        tmpl, params, body, problem = validate(method, path, raw)
        if not problem and raw and "application/json" not in (self.headers.get("Content-Type") or ""):
            problem = "the body is sent as %r, not application/json" % self.headers.get("Content-Type")
        entry = {"method": method, "path": path, "body": body, "valid": problem is None, "problem": problem,
                 "sock": SOCK}
        if problem:
            entry["status"] = 400
            log(entry)
            return self.reply(400, {"fault_message": "fake firecracker: " + problem})
        if knob("FAKE_FC_FAIL") == "%s %s" % (method, path):
            entry["status"] = 400
            log(entry)
            return self.reply(400, {"fault_message": knob("FAKE_FC_FAULT") or "injected fault"})
        code, out = self.act(method, tmpl, params, body)
        entry["status"] = code
        log(entry)
        self.reply(code, out)

    def act(self, method, tmpl, params, body):
        with lock:
            if method == "GET" and tmpl == "/":
                return 200, {"app_name": "Firecracker", "id": "anonymous-instance", "vmm_version": "1.16.1",
                             "state": "Running" if state["started"] else "Not started"}
            if method == "GET" and tmpl == "/machine-config":
                return 200, state["machine"]
            if method == "GET" and tmpl == "/version":
                return 200, {"firecracker_version": "1.16.1"}
            if method in ("PUT", "PATCH") and tmpl in PRE_BOOT and state["started"]:
                return 400, {"fault_message": "The requested operation is not supported after starting the microVM."}
            if tmpl == "/machine-config":
                state["machine"].update(body)
                return 204, None
            if tmpl == "/boot-source":
                state["boot"] = body
                return 204, None
            if tmpl == "/drives/{drive_id}":
                state["drives"][params["drive_id"]] = body
                return 204, None
            if tmpl == "/network-interfaces/{iface_id}":
                state["ifaces"][params["iface_id"]] = body
                return 204, None
            if tmpl == "/actions":
                a = body["action_type"]
                if a == "InstanceStart":
                    if state["started"]:
                        return 400, {"fault_message": "The microVM is already running."}
                    if not state["boot"]:
                        return 400, {"fault_message": "Cannot start microvm without kernel configuration."}
                    state["started"] = True
                    root = [d.get("path_on_host") for d in state["drives"].values() if d.get("is_root_device")]
                    console("fake guest: booting kernel %s initrd %s root %s on %s, cmdline %r" % (
                        state["boot"].get("kernel_image_path"), state["boot"].get("initrd_path"),
                        root[0] if root else None, ",".join(i["host_dev_name"] for i in state["ifaces"].values()),
                        state["boot"].get("boot_args")))
                    if knob("FAKE_FC_CRASH_AFTER"):
                        later(float(knob("FAKE_FC_CRASH_AFTER")),
                              lambda: (console("fake guest: Kernel panic - not syncing: fake"), os._exit(3)))
                    if knob("FAKE_FC_PANIC_AFTER"):
                        later(float(knob("FAKE_FC_PANIC_AFTER")),
                              lambda: (console("[    0.9] Kernel panic - not syncing: VFS: Unable to mount root fs"),
                                       console("[    1.9] Rebooting in 1 seconds.."), os._exit(0)))
                    if knob("FAKE_FC_POWEROFF_AFTER"):
                        later(float(knob("FAKE_FC_POWEROFF_AFTER")),
                              lambda: (console("fake guest: reboot: Power down"), os._exit(0)))
                    return 204, None
                if a == "SendCtrlAltDel":
                    if not state["started"]:
                        return 400, {"fault_message": "The microVM is not running."}
                    if not knob("FAKE_FC_IGNORE_CAD"):
                        console("fake guest: Ctrl-Alt-Del, powering off")
                        later(0.2, lambda: os._exit(0))
                    return 204, None
                return 204, None  # FlushMetrics
            return 204, None

    do_GET = do_PUT = do_PATCH = handle_any


class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass


def main(argv):
    sock = None
    i = 1
    while i < len(argv):
        a = argv[i]
        if a == "--api-sock":
            sock = argv[i + 1]
            i += 2
        elif a in ("--id", "--level", "--log-path", "--config-file", "--seccomp-filter"):
            i += 2
        elif a in ("--no-seccomp", "--show-level", "--show-log-origin", "--boot-timer"):
            i += 1
        else:
            sys.stderr.write("fake firecracker: unknown argument %s\n" % a)
            return 1
    if not sock:
        sys.stderr.write("fake firecracker: --api-sock is required\n")
        return 1
    if os.path.exists(sock):
        sys.stderr.write("fake firecracker: Failed to open the API socket: address in use: %s\n" % sock)
        return 1
    global SOCK
    SOCK = sock
    d = os.path.dirname(os.path.abspath(sock))
    try:
        with open(os.path.join(d, "fake-firecracker.json")) as f:
            KNOBS.update(json.load(f))
    except OSError:
        pass
    KNOBS.setdefault("FAKE_FC_LOG", os.environ.get("FAKE_FC_LOG") or os.path.join(d, "fake-firecracker.log"))
    signal.signal(signal.SIGTERM, lambda *a: os._exit(143))
    srv = Server(sock, Handler)
    console("fake firecracker 1.16.1: API server listening on %s" % sock)
    srv.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
