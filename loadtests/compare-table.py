#!/usr/bin/env python3
"""Summaries of vigil-load's JSON reports for loadtests/compare.sh.

    compare-table.py REPORT.json                 markdown table, CPU ratios to nginx
    compare-table.py --per-connection KEEPALIVE.json CLOSE.json
                                                 CPU per request on kept-alive
                                                 connections, with a connection
                                                 per request, and the difference
    compare-table.py --half-peak REPORT.json     half the lower throughput of
                                                 vigil-off and vigil-enforce
    compare-table.py --p99-increment REPORT.json p99 of enforce minus off
"""
import json
import sys


def reports(path):
    with open(path, encoding="utf-8") as f:
        return {r["target"]: r for r in json.load(f)["reports"]}


def us(v):
    return f"{v / 1000:.2f} ms" if v >= 1000 else f"{v:.0f} µs"


def cpu(r):
    return r.get("cpu_us_per_request")


def table(path):
    rs = reports(path)
    base = cpu(rs["nginx"]) if "nginx" in rs else None
    print("| target | req/s | p50 | p99 | CPU µs/request | CPU × nginx | refused | errors | connections (TLS resumed) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, r in rs.items():
        c = cpu(r)
        refused = sum(r["refusals"].values())
        errors = sum(r["errors"].values())
        print("| {} | {:,.0f} | {} | {} | {} | {} | {:.1f} % | {} | {:,} ({:,}) |".format(
            name, r["throughput"], us(r["latency"]["p50"]), us(r["latency"]["p99"]),
            "–" if c is None else f"{c:.1f}",
            "–" if c is None or not base else f"{c / base:.2f}",
            100 * refused / max(r["requests"], 1), errors,
            r.get("connections", 0), r.get("tls_resumed", 0)))


def per_connection(keepalive, close):
    ka, cl = reports(keepalive), reports(close)
    base = None
    if "nginx" in ka and "nginx" in cl and cpu(ka["nginx"]) and cpu(cl["nginx"]):
        base = cpu(cl["nginx"]) - cpu(ka["nginx"])
    print("| target | CPU µs/request, kept alive | CPU µs/request, a connection each | per connection (difference) | × nginx | TLS resumed |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, r in cl.items():
        a, b = cpu(ka.get(name, {})), cpu(r)
        if a is None or b is None:
            continue
        d = b - a
        print("| {} | {:.1f} | {:.1f} | {:.1f} | {} | {:.0f} % |".format(
            name, a, b, d, f"{d / base:.2f}" if base else "–",
            100 * r.get("tls_resumed", 0) / max(r.get("connections", 0), 1)))


def half_peak(path):
    rs = reports(path)
    peak = min(rs[t]["throughput"] for t in ("vigil-off", "vigil-enforce"))
    print(max(int(peak / 2), 1))


def p99_increment(path):
    rs = reports(path)
    off, enf = rs["vigil-off"], rs["vigil-enforce"]
    d = enf["latency"]["p99"] - off["latency"]["p99"]
    print(f"open loop, {off['load']}: p99 vigil-off {us(off['latency']['p99'])}, "
          f"vigil-enforce {us(enf['latency']['p99'])}: enforce adds {d:+.0f} µs at p99 "
          f"(goal ≤ 50 µs; p50 {enf['latency']['p50'] - off['latency']['p50']:+.0f} µs)")
    # The generator's own lateness is in every target's latency: what it
    # cannot tell apart.
    late = [(n, r["sent_late"]) for n, r in rs.items() if r.get("sent_late")]
    if late:
        print("the generator sent late by p50/p99 " + ", ".join(
            f"{n} {us(l['p50'])}/{us(l['p99'])}" for n, l in late))


def main(argv):
    if len(argv) == 2:
        table(argv[1])
    elif len(argv) == 4 and argv[1] == "--per-connection":
        per_connection(argv[2], argv[3])
    elif len(argv) == 3 and argv[1] == "--half-peak":
        half_peak(argv[2])
    elif len(argv) == 3 and argv[1] == "--p99-increment":
        p99_increment(argv[2])
    else:
        print(__doc__, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
