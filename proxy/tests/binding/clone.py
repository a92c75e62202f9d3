"""Drives one rotating-binding scenario through a real Vigil with curl_cffi
impersonating Chrome: the victim and the thief share the exact TLS and HTTP
stack and the loopback address. Cookies are kept by hand so that a jar can
be copied and a response's Set-Cookie dropped. Prints one JSON object.

Usage: clone.py SCENARIO BASE_URL CA_FILE
"""

import json
import sys
import threading
import time

from curl_cffi import requests

SCENARIO, BASE, CA = sys.argv[1:4]
DEADLINE = time.monotonic() + 30
UA_BROWSER = "chrome"


class Jar:
    def __init__(self):
        self.cookies = {}

    def copy(self):
        j = Jar()
        j.cookies = dict(self.cookies)
        return j

    def header(self):
        return "; ".join(f"{k}={v}" for k, v in self.cookies.items())

    def get(self, path, keep=True):
        headers = {"Cookie": self.header()} if self.cookies else {}
        r = requests.get(BASE + path, headers=headers, verify=CA, timeout=10,
                         impersonate=UA_BROWSER, allow_redirects=False)
        sets = [v for k, v in r.headers.multi_items() if k.lower() == "set-cookie"]
        # Host-wide companions are named with the __Host- prefix.
        companions = [s for s in sets
                      if s.startswith(("vigil_bind=", "__Host-vigil_bind="))]
        # Only an answered request's cookies are kept: a refusal's deletion
        # of the session cookie is ignored, as a thief would, so that the
        # next request shows whether the session itself is still honoured.
        if keep and r.status_code == 200:
            for s in sets:
                name, _, rest = s.partition("=")
                value = rest.split(";", 1)[0]
                # An expiry (Max-Age=0) removes the cookie, as a browser does.
                if "Max-Age=0" in rest:
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = value
        return r.status_code, companions


def poll(what, cond):
    """Repeats `what()` until `cond(result)`; every result is returned."""
    seen = []
    while time.monotonic() < DEADLINE:
        res = what()
        seen.append(res)
        if cond(res):
            return seen
        # A new TLS connection per request: a short pause keeps the poll
        # from flooding a shared CI machine. Not synchronisation: the
        # condition polled is the proxy's answer.
        time.sleep(0.1)
    raise SystemExit(f"deadline passed: {seen[-5:]}")


def after(seconds):
    """Lets wall-clock seconds pass (the binding counts whole seconds):
    the smallest configured durations, waited for by polling the clock."""
    end = time.time() + seconds
    while time.time() < end:
        time.sleep(0.05)


out = {}
victim = Jar()
status, comp = victim.get("/login?user=alice&session=alice-session-0123456789")
out["login"] = [status, len(comp)]
status, comp = victim.get("/echo")
out["first"] = [status, len(comp)]
# What the app saw of the jar: its own cookie, never Vigil's companion.
r = requests.get(BASE + "/echo", headers={"Cookie": victim.header()}, verify=CA,
                 timeout=10, impersonate=UA_BROWSER)
out["app_saw"] = {"session": "alice-session" in r.text, "companion": "vigil_bind" in r.text,
                  "status": r.status_code}
thief = victim.copy()

if SCENARIO == "victim_first":
    rot = poll(lambda: victim.get("/echo"), lambda r: r[1])
    out["victim_rotation"] = [s for s, _ in rot]
    out["victim_presents"] = victim.get("/echo")[0]
    seen = poll(lambda: thief.get("/echo"), lambda r: r[0] != 200)
    out["thief"] = [s for s, _ in seen]
    out["victim_after"] = victim.get("/echo")[0]
    out["thief_after"] = thief.get("/echo")[0]
elif SCENARIO == "thief_first":
    rot = poll(lambda: thief.get("/echo"), lambda r: r[1])
    out["thief_rotation"] = [s for s, _ in rot]
    out["thief_presents"] = thief.get("/echo")[0]
    seen = poll(lambda: victim.get("/echo"), lambda r: r[0] != 200)
    out["victim"] = [s for s, _ in seen]
    out["thief_after"] = thief.get("/echo")[0]
    out["victim_after"] = victim.get("/echo")[0]
elif SCENARIO == "rolling":
    # The app re-sends its session cookie on every response: the binding
    # rotates all the same, and the copy is caught.
    rot = poll(lambda: victim.get("/rolling"), lambda r: r[1])
    out["victim_rotation"] = [s for s, _ in rot]
    out["victim_presents"] = victim.get("/rolling")[0]
    seen = poll(lambda: thief.get("/rolling"), lambda r: r[0] != 200)
    out["thief"] = [s for s, _ in seen]
    out["victim_after"] = victim.get("/rolling")[0]
    out["thief_after"] = thief.get("/rolling")[0]
elif SCENARIO == "app_cookie_only":
    bare = Jar()
    bare.cookies = {"session": victim.cookies["session"]}
    out["thief"] = bare.get("/echo")[0]
    out["victim_after"] = victim.get("/echo")[0]
elif SCENARIO == "dropped":
    rot = poll(lambda: victim.get("/echo", keep=False), lambda r: r[1])
    out["rotation"] = [s for s, _ in rot]
    # Back with the old generation until Vigil issues it again.
    again = poll(lambda: victim.get("/echo"), lambda r: r[1] or r[0] != 200)
    out["again"] = [[s, len(c)] for s, c in again]
    out["after"] = [victim.get("/echo")[0] for _ in range(3)]
elif SCENARIO == "concurrent":
    after(float(sys.argv[4]))
    results = []
    lock = threading.Lock()

    def one():
        res = victim.copy().get("/echo", keep=False)
        with lock:
            results.append(res)

    threads = [threading.Thread(target=one) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out["statuses"] = sorted(s for s, _ in results)
    rotations = [c for _, cs in results for c in cs]
    out["rotations"] = len(rotations)
    if rotations:
        name, _, value = rotations[0].split(";", 1)[0].partition("=")
        victim.cookies[name] = value
    out["after"] = [victim.get("/echo")[0] for _ in range(3)]
elif SCENARIO == "tossed":
    # The thief rotates the copy and presents its successor, then plants
    # it in the victim's browser under the bare name, as a sibling host's
    # `Set-Cookie: vigil_bind=...; Domain=<parent>` would; the victim's own
    # companion is the `__Host-` one.
    out["names"] = sorted(k for k in victim.cookies if "vigil_bind" in k)
    rot = poll(lambda: thief.get("/echo"), lambda r: r[1])
    out["thief_rotation"] = [s for s, _ in rot]
    out["thief_presents"] = thief.get("/echo")[0]
    planted = [v for k, v in thief.cookies.items() if k.endswith("vigil_bind")][0]
    victim.cookies["vigil_bind"] = planted
    seen = poll(lambda: victim.get("/echo"), lambda r: r[0] != 200)
    out["victim"] = [s for s, _ in seen]
elif SCENARIO == "step_up":
    # Long before rotate_after: the victim re-authenticates, the app
    # confirms it, and that response carries the next generation.
    status, comp = victim.get("/reauth")
    out["reauth"] = [status, len(comp)]
    out["victim_presents"] = victim.get("/echo")[0]
    seen = poll(lambda: thief.get("/echo"), lambda r: r[0] != 200)
    out["thief"] = [s for s, _ in seen]
    out["victim_after"] = victim.get("/echo")[0]
elif SCENARIO == "tossed_four":
    # A sibling host sets four bare-named junk companions on the parent
    # domain, one per Path (/, /a, /a/, /a/b): the victim's browser sends
    # them beside its own __Host- companion, before it (longer paths first)
    # or after it.
    out["names"] = sorted(k for k in victim.cookies if "vigil_bind" in k)
    bare = "; ".join(f"vigil_bind=junk{i}" for i in range(4))

    def raw(cookie):
        r = requests.get(BASE + "/a/b", headers={"Cookie": cookie}, verify=CA, timeout=10,
                         impersonate=UA_BROWSER, allow_redirects=False)
        return r.status_code
    out["bare_first"] = raw(bare + "; " + victim.header())
    out["host_first"] = raw(victim.header() + "; " + bare)
    out["after"] = victim.get("/echo")[0]
else:
    raise SystemExit(f"unknown scenario {SCENARIO}")

print(json.dumps(out))
