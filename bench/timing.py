#!/usr/bin/env python3
"""Times commands in alternation (A, B, A, B, ...) so that both see the same machine load, and
prints, per command, the median wall time, the median CPU time (user + system, from wait4) and the
peak RSS (from wait4; Linux counts the spawning process's resident size in it, so values under
about 15 MB say little). Used by bench/run.sh.

Usage: timing.py RUNS OUT_FILE -- CMD_A... -- CMD_B... [-- CMD_C...]
Each command's stdout goes to OUT_FILE (a file, as a user would keep a report). Output: one line
per command: `wall_s cpu_s peak_kb`.
"""
import os
import statistics
import sys
import time

runs = int(sys.argv[1])
out_file = sys.argv[2]
cmds = []
for arg in sys.argv[3:]:
    if arg == "--":
        cmds.append([])
    else:
        cmds[-1].append(arg)

walls = [[] for _ in cmds]
cpus = [[] for _ in cmds]
peaks = [0 for _ in cmds]
for _ in range(runs):
    for k, cmd in enumerate(cmds):
        fd = os.open(out_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        t0 = time.perf_counter()
        # posix_spawn (a vfork-style clone in glibc), not fork: forking this Python process
        # costs more than starting a small program, and would be timed with it.
        pid = os.posix_spawnp(
            cmd[0],
            cmd,
            os.environ,
            file_actions=[
                (os.POSIX_SPAWN_DUP2, fd, 1),
                (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0),
            ],
        )
        _, status, ru = os.wait4(pid, 0)
        walls[k].append(time.perf_counter() - t0)
        os.close(fd)
        code = os.waitstatus_to_exitcode(status)
        # `origin-agent scan` exits with its verdict's monitoring code (0-3); grep -c 1 for none.
        if code > 3 or code < 0:
            sys.exit("%s exited with %d" % (" ".join(cmd), code))
        cpus[k].append(ru.ru_utime + ru.ru_stime)
        peaks[k] = max(peaks[k], ru.ru_maxrss)
for k in range(len(cmds)):
    print("%.4f %.4f %d" % (statistics.median(walls[k]), statistics.median(cpus[k]), peaks[k]))
