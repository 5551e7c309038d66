#!/usr/bin/env bash
# Log-reading benchmark: generates realistic nginx logs deterministically (bench/gen_logs.py:
# 1,000,000 access lines ~250 MB with ~1% 5xx, 200,000 error-log lines), then times, in the same
# run and on the same (page-cached) files:
#   - the agent's full parse (`origin-agent scan FILE`, or the `scan` example that calls the same
#     library function when the binary has no `scan` subcommand yet),
#   - `grep -c ' 502 ' FILE` (output to a pipe: grep stops at the first match when writing to
#     /dev/null),
#   - `cat FILE > /dev/null`,
# each the best of RUNS runs, and prints the ratios and the agent's peak memory (max RSS).
# Goals: access-log parse / grep <= 1.0; error-log parse / grep <= 1.5; peak memory < 64 MB.
#
# Usage: bench/run.sh [DIR]   (DIR defaults to target/bench-logs; RUNS=5 by default)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
dir="${1:-$root/target/bench-logs}"
runs="${RUNS:-5}"

cd "$root"
cargo build --release --quiet --bin origin-agent --example scan
agent="$root/target/release/origin-agent"
if "$agent" scan --help 2>&1 | grep -qi "scan"; then
    # `scan` exits with the monitoring code of its verdict (0-3): that is an answer, not a failure.
    scan=(bash -c '"$0" scan "$@" > /dev/null; [ $? -le 3 ]' "$agent")
    what="origin-agent scan"
else
    scan=("$root/target/release/examples/scan")
    what="scan example (library scan_paths; the binary has no scan subcommand yet)"
fi

if [[ ! -s "$dir/access.log" || ! -s "$dir/error.log" ]]; then
    echo "generating logs in $dir ..."
    python3 "$here/gen_logs.py" "$dir"
fi

# best wall time (seconds) of $runs runs of "$@"
best() {
    local b=999999 t s e
    for _ in $(seq "$runs"); do
        s=$(date +%s.%N)
        "$@" | cat > /dev/null
        e=$(date +%s.%N)
        t=$(echo "$e - $s" | bc -l)
        if (( $(echo "$t < $b" | bc -l) )); then b=$t; fi
    done
    printf '%.3f' "$b"
}

peak_kb() {
    /usr/bin/time -f '%M' "$@" 2>&1 >/dev/null | tail -1
}

# least CPU time (user + system seconds) of $runs runs: what the work costs whatever the load
best_cpu() {
    local b=999999 t
    for _ in $(seq "$runs"); do
        t=$( { /usr/bin/time -f '%U %S' "$@" > /tmp/.bench-out.$$; } 2>&1 | tail -1 | awk '{print $1 + $2}')
        if (( $(echo "$t < $b" | bc -l) )); then b=$t; fi
    done
    rm -f /tmp/.bench-out.$$
    printf '%.2f' "$b"
}

echo "agent: $what"
echo "cores: $(nproc)   runs: best of $runs"
for f in access error; do
    file="$dir/$f.log"
    cat "$file" > /dev/null   # warm the page cache
    size=$(stat -c %s "$file")
    lines=$(wc -l < "$file")
    t_scan=$(best "${scan[@]}" "$file")
    t_grep=$(best grep -c ' 502 ' "$file")
    t_cat=$(best sh -c "cat '$file' > /dev/null")
    mem=$(peak_kb "${scan[@]}" "$file")
    c_scan=$(best_cpu "${scan[@]}" "$file")
    c_grep=$(best_cpu grep -c ' 502 ' "$file")
    ratio=$(echo "$t_scan / $t_grep" | bc -l)
    printf '%s.log: %d lines, %d MB\n' "$f" "$lines" $((size / 1000000))
    printf '  scan %ss   grep -c %ss   cat %ss   scan/grep %.2f   scan/cat %.1f   peak RSS %d MB\n' \
        "$t_scan" "$t_grep" "$t_cat" "$ratio" "$(echo "$t_scan / $t_cat" | bc -l)" $((mem / 1024))
    printf '  cpu (user+sys): scan %ss   grep -c %ss   ratio %.2f\n' "$c_scan" "$c_grep" \
        "$(echo "$c_scan / $c_grep" | bc -l)"
done
echo "load average during the run: $(cut -d' ' -f1-3 /proc/loadavg) (wall ratios need idle cores)"
echo "summary of the last scan:"
"$agent" scan "$dir/access.log" "$dir/error.log" | cut -c1-400 || true
