#!/usr/bin/python3
"""Write the hostile workload definitions of test_hostile_input.sh: DIR/NAME.json (the bytes a
front-end receives) and DIR/NAME.re (an extended regex the FAILED reason must match).

Usage: hostile_cases.py DIR IMAGE     IMAGE: a valid image reference for the parts not under test
"""
import json
import os
import sys

out, image = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)
SIZE = r"(larger than|bytes \(1 MiB\)|1048576)"


def pod(name="p", containers=None, **spec):
    if containers is None:
        containers = [{"name": "c", "image": image, "env": None, "ports": None}]
    s = {"containers": containers}
    s.update(spec)
    return {"apiVersion": "v1", "kind": "Pod", "name": name, "replicas": None, "spec": s}


def ctr(**kw):
    c = {"name": "c", "image": image, "env": None, "ports": None}
    c.update(kw)
    return c


def case(name, definition, regex):
    data = definition if isinstance(definition, bytes) else json.dumps(definition).encode()
    with open(os.path.join(out, name + ".json"), "wb") as f:
        f.write(data)
    with open(os.path.join(out, name + ".re"), "w") as f:
        f.write(regex + "\n")


case("deep", b"[" * 10000 + b"]" * 10000, "nested deeper than 32 levels")
case("name5mb", pod("x" * (5 << 20)), SIZE)
case("name_badutf8", b'{"apiVersion":"v1","kind":"Pod","name":"a\xff\xfeb","spec":{}}', "not valid UTF-8 at byte")
case("env_badutf8", json.dumps(pod(containers=[ctr(env=[{"name": "A", "value": "@@"}])])).encode()
     .replace(b"@@", b"\xc0\xaf"), "not valid UTF-8 at byte")
case("raw_nul", b'{"apiVersion":"v1","kind":"Pod","name":"p\x00../x","spec":{}}', "NUL")
case("trailing_nul", json.dumps(pod()).encode() + b"\x00garbage", "NUL")
case("name_dotdot", pod("../x"), r'name is "\.\./x"')
case("name_slash", pod("a/b"), r'name is "a/b"')
case("name_nul", pod("a\u0000b"), "NUL")
case("name_shell", pod("$(touch /tmp/pwned);rm -rf /"), r'name is "\$\(touch /tmp/pwned\);rm -rf /"')
case("name_300", pod("x" * 300), r"name is \"x+\"\.\.\. \(300 bytes\)")
case("name_empty", pod(""), r'name is "":')
case("name_dot", pod("."), r'name is "\.":')
case("cname_dotdot", pod(containers=[ctr(name="../../etc")]), r'containers\[1\]\.name is "\.\./\.\./etc"')
case("cname_number", pod(containers=[ctr(name=5)]), r"containers\[1\]\.name is 5:")
case("image_shell", pod(containers=[ctr(image=";rm -rf /")]), r'image ";rm -rf /"')
case("image_number", pod(containers=[ctr(image=123)]), "image is 123: expected a string")
case("containers_1000", pod(containers=[ctr(name="c%d" % i) for i in range(1000)]), "1000 containers: at most 32")
case("dup_names", pod(containers=[ctr(), ctr()]), r'name "c" is used twice')
case("env_100k", pod(containers=[ctr(env=[{"name": "E%d" % i, "value": "v"} for i in range(100000)])]), SIZE)
case("env_300", pod(containers=[ctr(env=[{"name": "E%d" % i, "value": "v"} for i in range(300)])]),
     "env has 300 entries: at most 256")
case("env_object", pod(containers=[ctr(env={"A": "b"})]), r'env is \{"A":"b"\}: expected null or an array')
case("env_value_nul", pod(containers=[ctr(env=[{"name": "A", "value": "a\u0000b"}])]), "NUL")
case("port_range", pod(containers=[ctr(ports={"port": 70000, "target_port": 80})]), "port is 70000:")
case("port_negative", pod(containers=[ctr(ports={"port": -1, "target_port": 80})]), "port is -1:")
case("port_string", pod(containers=[ctr(ports={"port": "80", "target_port": 80})]), r'port is "80":')
case("port_huge", pod(containers=[ctr(ports={"port": 1e300, "target_port": 80})]), r"port is 1e\+300:")
case("ports_string", pod(containers=[ctr(ports="8080:80")]), r'ports is "8080:80": expected null, an object')
case("containers_object", pod(containers={"c": ctr()}), r'spec\.containers is \{"c":')
case("spec_array", {"apiVersion": "v1", "kind": "Pod", "name": "p", "spec": [1]}, r"spec is \[1\]: expected an object")
case("kind_unknown", {"apiVersion": "v1", "kind": "Deployment", "name": "p", "spec": {}}, r'kind is "Deployment"')
case("kind_number", {"apiVersion": "v1", "kind": 3, "name": "p", "spec": {}}, "kind is 3:")
case("top_array", [1, 2], r"is \[1,2\]: expected a JSON object")
case("port_reserved", pod(containers=[ctr(ports={"port": 22, "target_port": 80})]), "node port 22/tcp is reserved")
