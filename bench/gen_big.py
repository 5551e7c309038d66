#!/usr/bin/env python3
"""Builds a 10 GiB nginx access log for the window benchmark without 10 GiB of disk: a sparse
file whose first (30 days - 2 h) hold a 4 KiB island of real lines every 512 KiB (the rest are
holes, read as NUL bytes), and whose last 2 hours are dense real lines, 25,000 an hour (the rate
of bench/gen_logs.py's access log), the newest 30 s before now. About 95 MB on disk.

Usage: gen_big.py FILE [SIZE_BYTES]. Prints `since=RFC3339 responses=N status_502=M`: the window
of the last hour as of generation, and how many lines and 502s it holds (the truth the benchmark
checks the agent's counts against).
"""
import os
import random
import sys
import time

path = sys.argv[1]
size = int(sys.argv[2]) if len(sys.argv) > 2 else 10 << 30
rng = random.Random(20261203)
MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


def stamp(t):
    g = time.gmtime(t)
    return "%02d/%s/%d:%02d:%02d:%02d +0000" % (g.tm_mday, MONTHS[g.tm_mon - 1], g.tm_year, g.tm_hour, g.tm_min, g.tm_sec)


def line(t, status):
    return '172.70.%d.%d - - [%s] "GET /shop/product/%d/ HTTP/1.1" %d %d "https://example.com/" "Mozilla/5.0 (X11; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0"\n' % (
        rng.randrange(256), rng.randrange(256), stamp(t), rng.randrange(10**6), status, rng.randrange(200, 60000))


now = int(time.time())
end = now - 30
dense_from = end - 2 * 3600
begin = end - 30 * 86400
since = now - 3600
tail_lines = 2 * 25000
tail = []
responses = n502 = 0
for i in range(tail_lines):
    t = dense_from + i * (end - dense_from) // tail_lines
    status = 502 if rng.random() < 0.01 else 200
    if t >= since:
        responses += 1
        n502 += status == 502
    tail.append(line(t, status))
tail = "".join(tail).encode()
island_every = 512 << 10
islands_end = size - len(tail)
with open(path, "wb") as f:
    f.truncate(size)
    off = 0
    while off + 4096 <= islands_end:
        t = begin + (dense_from - begin) * off // islands_end
        block = b"\n" if off else b""
        while True:
            l = line(t, 200).encode()
            if len(block) + len(l) > 4096:
                break
            block += l
        f.seek(off)
        f.write(block)
        off += island_every
    f.seek(islands_end)
    f.write(tail)
print("since=%s responses=%d status_502=%d" % (time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(since)), responses, n502))
