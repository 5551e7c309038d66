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
# Usage: bench/run.sh [DIR]   (DIR defaults to target/bench-logs; RUNS=9; BIG=0 skips the 10 GiB)
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
}
row "access log" "≤ 0.5" "$dir/access.log"
row "error log" "≤ 0.8" "$dir/error.log"
row "PHP-FPM log" "" "$dir/php-fpm.log"
row "MariaDB log" "" "$dir/mariadb.log"
row "all four logs" "≤ 0.5" "$dir/access.log" "$dir/error.log" "$dir/php-fpm.log" "$dir/mariadb.log"

: > "$scratch/empty.log"
mapfile -t res < <(python3 "$here/timing.py" $((runs * 3)) "$out" -- "$agent" scan --json "$scratch/empty.log" -- true)
read -r ew _ ep <<< "${res[0]}"
read -r tw _ _ <<< "${res[1]}"
echo
printf 'start-up (scan --json of an empty file): %.2f ms wall (goal ≤ 2 ms), /bin/true %.2f ms; peak RSS %d MB\n' \
    "$(echo "$ew * 1000" | bc -l)" "$(echo "$tw * 1000" | bc -l)" $((ep / 1024))

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
fi
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg) (wall ratios need idle cores; CPU ratios do not)"
