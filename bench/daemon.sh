#!/usr/bin/env bash
# Daemon budgets, measured on the real `origin-agent run` (release build, the same parser, rules
# and diagnosis as `audit`): a steady 2,000 access-log lines per second (1% 502) for DURATION
# seconds, then a flood of 50,000 lines per second for 5 s. Prints the daemon's CPU share of one
# core and its peak resident memory during each phase, the delay until a 502 line shows in
# /metrics, and whether /metrics kept answering during the flood.
# Budgets (issue 7): < 1% of a core and < 30 MB at 2,000 lines/s; a 5xx in the metrics within 2 s;
# bounded memory and a live /metrics under a 50,000 lines/s flood.
#
#   bench/daemon.sh            (DURATION=30 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
duration="${DURATION:-30}"
cargo build --release --quiet --bin origin-agent
agent="$PWD/target/release/origin-agent"
dir=$(mktemp -d)
# The daemon is stopped and waited for before its state directory goes (it writes there until
# it exits).
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$dir" || true' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
: > "$dir/access.log"; : > "$dir/error.log"
cat > "$dir/config.yaml" <<YAML
logs:
  nginx_access: [$dir/access.log]
  nginx_error: [$dir/error.log]
metrics:
  listen: 127.0.0.1:$port
state_dir: $dir/state
daemon:
  probe_interval: 1h
YAML
"$agent" run --config "$dir/config.yaml" 2> "$dir/daemon.err" &
pid=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/metrics" >/dev/null && break; sleep 0.1; done

cpu_ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
hz=$(getconf CLK_TCK)

python3 - "$dir/access.log" "$duration" 2000 <<'PY' &
import sys, time
path, seconds, rate = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
line = '203.0.113.{i} - - [{t}] "GET /p/{i} HTTP/1.1" {s} 612 "-" "Mozilla/5.0 (bench)" ua="unix:/run/php/php8.2-fpm.sock" us="{s}" urt="0.012" rt=0.012\n'
with open(path, "a", buffering=1 << 20) as f:
    start = time.time(); n = 0
    while time.time() - start < seconds:
        t = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime())
        due = int((time.time() - start) * rate)
        chunk = []
        while n < due:
            chunk.append(line.format(i=n % 250, t=t, s=502 if n % 100 == 0 else 200)); n += 1
        f.write("".join(chunk)); f.flush()
        time.sleep(0.05)
PY
writer=$!
sleep 3   # let the steady state settle
t0=$(cpu_ticks); s0=$(date +%s.%N)
wait $writer
t1=$(cpu_ticks); s1=$(date +%s.%N)
steady_cpu=$(echo "($t1 - $t0) / $hz / ($s1 - $s0) * 100" | bc -l)
steady_rss=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")

# Latency of one 502 line to /metrics.
before=$(curl -s "http://127.0.0.1:$port/metrics" | awk -F' ' '/^origin_agent_responses_total\{status="502"\}/ {print $2}')
before=${before:-0}
printf '198.51.100.1 - - [%s] "GET /late HTTP/1.1" 502 157 "-" "curl" ua="-" us="502" urt="0.000" rt=0.000\n' "$(date -u +%d/%b/%Y:%H:%M:%S) +0000" >> "$dir/access.log"
l0=$(date +%s.%N)
for _ in $(seq 400); do
    now=$(curl -s "http://127.0.0.1:$port/metrics" | awk -F' ' '/^origin_agent_responses_total\{status="502"\}/ {print $2}')
    if [ "${now:-0}" -gt "$before" ]; then break; fi
    sleep 0.01
done
l1=$(date +%s.%N)
latency=$(echo "$l1 - $l0" | bc -l)

# Flood: 50,000 lines/s for 5 s; /metrics polled meanwhile.
python3 - "$dir/access.log" 5 50000 <<'PY' &
import sys, time
path, seconds, rate = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
line = '203.0.113.{i} - - [{t}] "GET /f/{i} HTTP/1.1" {s} 612 "-" "Mozilla/5.0 (flood)" ua="-" us="-" urt="-" rt=0.001\n'
with open(path, "a", buffering=1 << 20) as f:
    start = time.time(); n = 0
    while time.time() - start < seconds:
        t = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime())
        due = int((time.time() - start) * rate)
        f.write("".join(line.format(i=k % 250, t=t, s=502 if k % 100 == 0 else 200) for k in range(n, due))); f.flush()
        n = max(n, due); time.sleep(0.02)
PY
flood=$!
answered=0; tries=0
while kill -0 $flood 2>/dev/null; do
    tries=$((tries + 1))
    curl -s -m 1 "http://127.0.0.1:$port/metrics" >/dev/null && answered=$((answered + 1))
    sleep 0.25
done
flood_rss=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
lines=$(curl -s "http://127.0.0.1:$port/metrics" | awk '/^origin_agent_log_lines_total\{source="nginx_access"\}/ {print $2}')
written=$(wc -l < "$dir/access.log")

printf 'steady 2000 lines/s: CPU %.2f%% of one core, peak RSS %.1f MB   (budget < 1%%, < 30 MB)\n' "$steady_cpu" "$(echo "$steady_rss / 1024" | bc -l)"
printf '502 line to /metrics: %.3f s   (budget < 2 s)\n' "$latency"
printf 'flood 50000 lines/s for 5 s: /metrics answered %d of %d polls, peak RSS %.1f MB; %s of %s lines counted\n' "$answered" "$tries" "$(echo "$flood_rss / 1024" | bc -l)" "${lines:-0}" "$written"
