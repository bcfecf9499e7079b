#!/usr/bin/env python3
"""Per-stage p99 timeline of a node's send path, read off its /metrics during a run.

usage: stage-timeline.py URL SECONDS [WINDOW_MS]

Every WINDOW_MS (default 500) it reads the node's latency histograms and prints, per window,
each stage's p99 over the sends that window saw: the whole send (`scalify_send_ack_seconds`),
the seq allocation and the recent-window deposit in Redis (`scalify_ledger_seconds`), the
broker's delivery report (`scalify_kafka_produce_seconds`). Set beside the load generator's own
p99 timeline, it tells which stage a stall of the ack tail sits in — or that none does, and
the delay is outside the node's send path (the socket, the scheduler, the load generator).

A p99 here is the upper bound of the histogram bucket it falls in (scalify-server's SECONDS
buckets: 10, 12.5, 15, 20, 25, 50, 100 ms …), so it reads as "at most".
"""
import re
import sys
import time
import urllib.request

STAGES = [
    ("send", "scalify_send_ack_seconds", None),
    ("allocate", "scalify_ledger_seconds", 'op="allocate"'),
    ("deposit", "scalify_ledger_seconds", 'op="deposit"'),
    ("produce", "scalify_kafka_produce_seconds", None),
]
BUCKET = re.compile(r'^(\w+)_bucket\{(.*)\} (\S+)$')


def read(url):
    """{stage: {le: cumulative count}} of one /metrics answer."""
    text = urllib.request.urlopen(url, timeout=2).read().decode()
    out = {name: {} for name, _, _ in STAGES}
    for line in text.splitlines():
        m = BUCKET.match(line)
        if not m:
            continue
        metric, labels, value = m.groups()
        le = re.search(r'le="([^"]+)"', labels)
        if not le:
            continue
        for name, wanted, label in STAGES:
            if metric == wanted and (label is None or label in labels):
                bound = float("inf") if le.group(1) == "+Inf" else float(le.group(1))
                out[name][bound] = out[name].get(bound, 0) + float(value)
    return out


def p99(before, after):
    """The upper bound (ms) of the bucket holding the window's 99th percentile, and the count."""
    bounds = sorted(after)
    diffs = [after[b] - before.get(b, 0) for b in bounds]
    total = diffs[-1] if diffs else 0
    if total <= 0:
        return None, 0
    # The +Inf bucket holds the total, so some bucket always does.
    return next(b * 1000 for b, c in zip(bounds, diffs) if c >= 0.99 * total), int(total)


def main():
    url = sys.argv[1].rstrip("/") + "/metrics"
    seconds = float(sys.argv[2])
    window = float(sys.argv[3]) / 1000 if len(sys.argv) > 3 else 0.5
    rows = {name: [] for name, _, _ in STAGES}
    counts = []
    prev = read(url)
    start = time.monotonic()
    n = 0
    while time.monotonic() - start < seconds:
        n += 1
        time.sleep(max(0.0, start + n * window - time.monotonic()))
        try:
            cur = read(url)
        except OSError:
            break
        for name, _, _ in STAGES:
            value, total = p99(prev[name], cur[name])
            rows[name].append(value)
            if name == "send":
                counts.append(total)
        prev = cur
    fmt = lambda v: "-" if v is None else f"{v:g}"
    print(f"node stages, p99 (ms, bucket bound) per {window * 1000:g} ms window from the sampler's start:")
    print(f"  {'sends':>9}: " + " ".join(str(c) for c in counts))
    for name, _, _ in STAGES:
        print(f"  {name:>9}: " + " ".join(fmt(v) for v in rows[name]))


if __name__ == "__main__":
    main()
