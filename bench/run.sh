#!/usr/bin/env bash
# Log-reading benchmark. Generates realistic logs deterministically (bench/gen_logs.py: a
# 1,000,000-line nginx access log of ~255 MB with ~1% 5xx, a 200,000-line nginx error log, a
# PHP-FPM log and a MariaDB error log), then times, in ONE invocation and in alternation (scan,
# grep, scan, grep, ...: both see the same load), on the same page-cached files:
#   - `origin-agent scan --json FILE…` (full parse, diagnosis and the JSON report), and
#   - `grep -c ' 502 ' FILE…`,
# each writing to a file, RUNS times (median; default 9, at least 7), and prints each ratio,
# both CPU times (user + system) and the agent's peak memory as a Markdown table;
# then start-up (scan of an empty file, next to /bin/true), and the window benchmark: the last
# hour of a 10 GiB access log (sparse, built in /tmp by bench/gen_big.py and deleted after),
# with the agent's counts checked against the generator's truth.
# Goals (issue 15): all four logs <= 0.5x grep, error log <= 0.8x, access log <= 0.5x, CPU <=
# grep's, start-up <= 2 ms, last hour of 10 GiB < 100 ms, peak memory < 64 MB.
#
# Then the daemon's budget (bench/daemon.sh: < 1% of a core and < 30 MB at 2,000 lines/s), and
# each goal with its measured value and MET / NOT MET.
#
# Usage: bench/run.sh [DIR]   (DIR defaults to target/bench-logs; RUNS=9; BIG=0 skips the 10 GiB;
#        DAEMON=0 skips the daemon's 40 s)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
dir="${1:-$root/target/bench-logs}"
runs="${RUNS:-9}"
(( runs >= 7 )) || { echo "RUNS must be at least 7 (median of at least 7)" >&2; exit 2; }

cd "$root"
cargo build --release --quiet --bin origin-agent --example scan
agent="$root/target/release/origin-agent"
example="$root/target/release/examples/scan"

if [[ ! -s "$dir/access.log" || ! -s "$dir/error.log" || ! -s "$dir/php-fpm.log" || ! -s "$dir/mariadb.log" ]]; then
    echo "generating logs in $dir ..."
    python3 "$here/gen_logs.py" "$dir"
fi
scratch="$(mktemp -d /tmp/origin-agent-bench.XXXXXX)"
trap 'rm -rf "$scratch"' EXIT
out="$scratch/out"

echo "cores: $(nproc)   runs: median of $runs, alternating   load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| work | size | scan wall | \`grep -c\` wall | wall ratio | goal | scan CPU | grep CPU | CPU ratio | scan peak RSS |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
row() {
    local name=$1 goal=$2; shift 2
    cat "$@" > /dev/null   # page cache
    local bytes
    bytes=$(cat "$@" | wc -c)
    local res
    mapfile -t res < <(python3 "$here/timing.py" "$runs" "$out" -- "$agent" scan --json "$@" -- grep -c ' 502 ' "$@")
    read -r sw sc sp <<< "${res[0]}"
    read -r gw gc _ <<< "${res[1]}"
    printf '| %s | %d MB | %.3f s | %.3f s | **%.2f** | %s | %.3f s | %.3f s | %.2f | %d MB |\n' \
        "$name" $((bytes / 1000000)) "$sw" "$gw" "$(echo "$sw / $gw" | bc -l)" "$goal" "$sc" "$gc" \
        "$(echo "$sc / $gc" | bc -l)" $((sp / 1024))
    wall_ratio[$name]=$(echo "$sw / $gw" | bc -l)
    cpu_ratio[$name]=$(echo "$sc / $gc" | bc -l)
    peak_kb[$name]=$sp
}
declare -A wall_ratio cpu_ratio peak_kb
goals=()
# goal NAME MEASURED LIMIT UNIT: one line of the verdict, MET when MEASURED <= LIMIT.
goal() {
    local verdict="NOT MET"
    (( $(echo "$2 <= $3" | bc -l) )) && verdict=MET
    goals+=("$(printf '%-44s %9.2f%s (goal <= %s%s)  %s' "$1" "$2" "$4" "$3" "$4" "$verdict")")
}
row "access log" "≤ 0.5" "$dir/access.log"
row "error log" "≤ 0.8" "$dir/error.log"
row "PHP-FPM log" "" "$dir/php-fpm.log"
row "MariaDB log" "" "$dir/mariadb.log"
row "all four logs" "≤ 0.5" "$dir/access.log" "$dir/error.log" "$dir/php-fpm.log" "$dir/mariadb.log"

: > "$scratch/empty.log"
mapfile -t res < <(python3 "$here/timing.py" $((runs * 3)) "$out" -- "$agent" scan --json "$scratch/empty.log" -- true)
read -r ew _ _ <<< "${res[0]}"
read -r tw _ _ <<< "${res[1]}"
echo
printf 'start-up (scan --json of an empty file): %.2f ms wall (goal ≤ 2 ms), /bin/true %.2f ms: %.2f ms more than starting a program that does nothing\n' \
    "$(echo "$ew * 1000" | bc -l)" "$(echo "$tw * 1000" | bc -l)" "$(echo "($ew - $tw) * 1000" | bc -l)"
goal "all four logs, wall / grep" "${wall_ratio[all four logs]}" 0.5 "x"
goal "error log, wall / grep" "${wall_ratio[error log]}" 0.8 "x"
goal "access log, wall / grep" "${wall_ratio[access log]}" 0.5 "x"
for w in "access log" "error log" "all four logs"; do
    goal "$w, CPU / grep" "${cpu_ratio[$w]}" 1.0 "x"
done
goal "start-up (empty file), wall" "$(echo "$ew * 1000" | bc -l)" 2 " ms"
goal "start-up beyond /bin/true's, wall" "$(echo "($ew - $tw) * 1000" | bc -l)" 2 " ms"
goal "peak memory, all four logs" "$(echo "${peak_kb[all four logs]} / 1024" | bc -l)" 64 " MB"

if [[ "${BIG:-1}" != 0 ]]; then
    big="$scratch/access.log"
    truth=$(python3 "$here/gen_big.py" "$big")
    since=$(sed -n 's/.*since=\([^ ]*\).*/\1/p' <<< "$truth")
    want_total=$(sed -n 's/.*responses=\([0-9]*\).*/\1/p' <<< "$truth")
    want_502=$(sed -n 's/.*status_502=\([0-9]*\).*/\1/p' <<< "$truth")
    got=$("$example" --since "$since" "$big" | tail -1)
    got_total=$(sed -n 's/^responses=\([0-9]*\) .*/\1/p' <<< "$got")
    got_502=$(sed -n 's/.* 502=\([0-9]*\) .*/\1/p' <<< "$got")
    mapfile -t res < <(python3 "$here/timing.py" "$runs" "$out" -- "$agent" scan --json --since 1h "$big")
    read -r bw bc bp <<< "${res[0]}"
    exact=no; [[ "$got_total" == "$want_total" && "$got_502" == "$want_502" ]] && exact=yes
    printf 'last hour of a %d GiB access log (scan --json --since 1h): %.1f ms wall, %.1f ms CPU (goal < 100 ms), peak RSS %d MB; counts exact: %s (%s responses, %s 502; truth %s, %s)\n' \
        $(( $(stat -c %s "$big") >> 30 )) "$(echo "$bw * 1000" | bc -l)" "$(echo "$bc * 1000" | bc -l)" $((bp / 1024)) \
        "$exact" "$got_total" "$got_502" "$want_total" "$want_502"
    rm -f "$big"
    goal "last hour of 10 GiB, wall" "$(echo "$bw * 1000" | bc -l)" 100 " ms"
    [[ "$exact" == yes ]] || goals+=("last hour of 10 GiB: counts NOT exact")
fi
if [[ "${DAEMON:-1}" != 0 ]]; then
    # The daemon's budget: bench/daemon.sh (a writer at 2,000 lines/s while `run` tails the log).
    echo
    daemon_out=$(DURATION="${DAEMON_SECONDS:-30}" "$here/daemon.sh") || echo "bench/daemon.sh failed" >&2
    echo "$daemon_out"
    read -r dcpu drss < <(sed -n 's/^steady 2000 lines\/s: CPU \([0-9.]*\)% of one core, peak RSS \([0-9.]*\) MB.*/\1 \2/p' <<< "$daemon_out")
    goal "daemon at 2,000 lines/s, CPU of one core" "${dcpu:-999}" 1 " %"
    goal "daemon at 2,000 lines/s, peak RSS" "${drss:-999}" 30 " MB"
fi
echo
echo "goals (issue 15):"
printf '  %s\n' "${goals[@]}"
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg) (wall ratios need idle cores; CPU ratios do not)"
