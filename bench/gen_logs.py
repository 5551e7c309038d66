#!/usr/bin/env python3
"""Generates realistic nginx logs deterministically (fixed seed) for the benchmark.

access.log: ACCESS_LINES lines (default 1,000,000, ~230 MB) in the combined format plus
` ua="$upstream_addr" us="$upstream_status" rt=$request_time`,
over 24 hours, about 1% 5xx (502 with the nginx-made body size, some 504 and 500).
error.log: ERROR_LINES physical lines (default 200,000) of the nginx error log: PHP warnings sent
in stderr (no event), open() 404 noise, and real upstream failures (socket missing, timeouts,
resets, fatal errors with multi-line stack traces).
php-fpm.log: FPM_LINES lines (default 100,000) of PHP-FPM's own log: child start/exit notices,
slow-request warnings, saturation, timeouts, crashes, stderr lines of children.
mariadb.log: MYSQL_LINES lines (default 50,000) of the MariaDB error log: aborted-connection
warnings, notes, too many connections, crashed tables.
"""
import os
import random
import sys

out = sys.argv[1] if len(sys.argv) > 1 else "."
access_lines = int(os.environ.get("ACCESS_LINES", "1000000"))
error_lines = int(os.environ.get("ERROR_LINES", "200000"))
fpm_lines = int(os.environ.get("FPM_LINES", "100000"))
mysql_lines = int(os.environ.get("MYSQL_LINES", "50000"))
rng = random.Random(20261124)

MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
AGENTS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
]
PATHS = ["/", "/index.php", "/wp-login.php", "/wp-admin/admin-ajax.php", "/shop/product/blue-widget/",
         "/blog/2026/11/why-502-happens/", "/wp-content/uploads/2026/11/hero.jpg", "/feed/",
         "/wp-json/wp/v2/posts?per_page=10", "/cart/?add-to-cart=123"]
REFS = ["-", "https://example.com/", "https://www.google.com/", "https://example.com/shop/"]
EDGES = ["172.70.%d.%d", "162.158.%d.%d", "141.101.%d.%d", "108.162.%d.%d"]
SOCK = "unix:/run/php/php8.2-fpm.sock"
TCP = "127.0.0.1:9000"

# Behind a CDN the clients are its edges: a pool of 3000 addresses, some much busier than others.
POOL = [EDGES[i % 4] % (i // 256 % 256, i % 256) for i in range(3000)]

start = 1795420800  # 2026-11-23T08:00:00Z (the stamp below is written with +0000)


def stamp_local(t):
    # gmtime by hand is slow in Python; use time module once per second
    import time as _t
    g = _t.gmtime(t)
    return "%02d/%s/%d:%02d:%02d:%02d +0000" % (g.tm_mday, MONTHS[g.tm_mon - 1], g.tm_year, g.tm_hour, g.tm_min, g.tm_sec)


def stamp_err(t):
    import time as _t
    g = _t.gmtime(t)
    return "%d/%02d/%02d %02d:%02d:%02d" % (g.tm_year, g.tm_mon, g.tm_mday, g.tm_hour, g.tm_min, g.tm_sec)


def access():
    path = os.path.join(out, "access.log")
    span = 86400
    cache = {}
    with open(path, "w", buffering=1 << 20) as f:
        for i in range(access_lines):
            t = start + i * span // access_lines
            s = cache.get(t)
            if s is None:
                cache.clear()
                s = cache[t] = stamp_local(t)
            edge = POOL[min(int(rng.expovariate(1 / 600.0)), len(POOL) - 1)]
            p = rng.choice(PATHS)
            r = rng.random()
            if r < 0.007:
                status, size, us, urt = 502, 157, "502", "0.000"
            elif r < 0.009:
                status, size, us, urt = 504, 167, "504", "60.001"
            elif r < 0.010:
                status, size, us, urt = 500, 5, "500", "0.012"
            elif r < 0.06:
                status, size, us, urt = 304, 0, "304", "0.004"
            elif r < 0.08:
                status, size, us, urt = 404, 548, "404", "0.021"
            else:
                status, size, us, urt = 200, rng.randrange(800, 60000), "200", "0.%03d" % rng.randrange(5, 900)
            f.write('%s - - [%s] "GET %s HTTP/1.1" %d %d "%s" "%s" ua="%s" us="%s" rt=%s\n' % (
                edge, s, p, status, size, rng.choice(REFS), rng.choice(AGENTS), TCP, us, urt))


def error():
    path = os.path.join(out, "error.log")
    n = 0
    conn = 1000
    with open(path, "w", buffering=1 << 20) as f:
        i = 0
        while n < error_lines:
            t = start + i * 86400 // error_lines
            i += 1
            conn += 1
            ts = stamp_err(t)
            client = rng.choice(EDGES) % (rng.randrange(256), rng.randrange(256))
            p = rng.choice(PATHS)
            tail = ', client: %s, server: example.com, request: "GET %s HTTP/1.1", upstream: "fastcgi://%s:", host: "example.com"' % (client, p, SOCK)
            r = rng.random()
            if r < 0.45:
                line = '%s [error] 4242#4242: *%d FastCGI sent in stderr: "PHP message: PHP Warning:  Undefined array key \\"id\\" in /var/www/html/wp-content/themes/shop/inc/cart.php on line %d" while reading response header from upstream%s' % (ts, conn, rng.randrange(1, 400), tail)
                n += 1
            elif r < 0.70:
                line = '%s [error] 4242#4242: *%d open() "/var/www/html%sfavicon-%d.png" failed (2: No such file or directory), client: %s, server: example.com, request: "GET /favicon.png HTTP/1.1", host: "example.com"' % (ts, conn, p, rng.randrange(100), client)
                n += 1
            elif r < 0.80:
                line = '%s [crit] 4242#4242: *%d connect() to %s failed (2: No such file or directory) while connecting to upstream%s' % (ts, conn, SOCK, tail)
                n += 1
            elif r < 0.86:
                line = '%s [error] 4242#4242: *%d upstream timed out (110: Connection timed out) while reading response header from upstream%s' % (ts, conn, tail.replace(SOCK + ":", SOCK))
                n += 1
            elif r < 0.92:
                line = '%s [error] 4242#4242: *%d recv() failed (104: Connection reset by peer) while reading response header from upstream%s' % (ts, conn, tail)
                n += 1
            elif r < 0.96:
                line = '%s [warn] 4242#4242: *%d an upstream response is buffered to a temporary file /var/lib/nginx/fastcgi/1/00/00000%05d while reading upstream%s' % (ts, conn, conn % 100000, tail)
                n += 1
            else:
                line = ('%s [error] 4242#4242: *%d FastCGI sent in stderr: "PHP message: PHP Fatal error:  Uncaught Error: Call to undefined function acme_slider_missing_function() in /var/www/html/wp-content/plugins/acme-slider/slider.php:3\n'
                        'Stack trace:\n#0 /var/www/html/wp-includes/class-wp-hook.php(324): acme_slider_render()\n#1 {main}\n'
                        '  thrown in /var/www/html/wp-content/plugins/acme-slider/slider.php on line 3" while reading response header from upstream%s') % (ts, conn, tail)
                n += 5
            f.write(line + "\n")


def stamp_fpm(t):
    import time as _t
    g = _t.gmtime(t)
    return "%02d-%s-%d %02d:%02d:%02d" % (g.tm_mday, MONTHS[g.tm_mon - 1], g.tm_year, g.tm_hour, g.tm_min, g.tm_sec)


def php_fpm():
    path = os.path.join(out, "php-fpm.log")
    with open(path, "w", buffering=1 << 20) as f:
        for i in range(fpm_lines):
            ts = stamp_fpm(start + i * 86400 // fpm_lines)
            pid = 20000 + rng.randrange(5000)
            r = rng.random()
            if r < 0.40:
                line = "[%s] NOTICE: [pool www] child %d started" % (ts, pid)
            elif r < 0.75:
                line = "[%s] NOTICE: [pool www] child %d exited with code 0 after %d.%06d seconds from start" % (ts, pid, rng.randrange(1, 3600), rng.randrange(10**6))
            elif r < 0.85:
                line = "[%s] WARNING: [pool www] child %d, script '/var/www/html/index.php' (request: \"GET /index.php\") executing too slow (%d.%06d sec), logging" % (ts, pid, rng.randrange(5, 30), rng.randrange(10**6))
            elif r < 0.90:
                line = "[%s] WARNING: [pool www] server reached pm.max_children setting (20), consider raising it" % ts
            elif r < 0.93:
                line = "[%s] WARNING: [pool www] child %d, script '/var/www/html/wp-cron.php' (request: \"GET /wp-cron.php\") execution timed out (60.%06d sec), terminating" % (ts, pid, rng.randrange(10**6))
            elif r < 0.95:
                line = "[%s] WARNING: [pool www] child %d exited on signal 11 (SIGSEGV - core dumped) after %d.%06d seconds from start" % (ts, pid, rng.randrange(1, 600), rng.randrange(10**6))
            else:
                line = "[%s] WARNING: [pool www] child %d said into stderr: \"NOTICE: PHP message: PHP Warning:  Undefined variable $x in /var/www/html/wp-content/themes/shop/functions.php on line %d\"" % (ts, pid, rng.randrange(1, 900))
            f.write(line + "\n")


def mariadb():
    path = os.path.join(out, "mariadb.log")
    import time as _t
    with open(path, "w", buffering=1 << 20) as f:
        for i in range(mysql_lines):
            g = _t.gmtime(start + i * 86400 // mysql_lines)
            ts = "%d-%02d-%02d %2d:%02d:%02d" % (g.tm_year, g.tm_mon, g.tm_mday, g.tm_hour, g.tm_min, g.tm_sec)
            cid = rng.randrange(1, 10**6)
            r = rng.random()
            if r < 0.70:
                line = "%s %d [Warning] Aborted connection %d to db: 'wp' user: 'wp' host: 'localhost' (Got an error reading communication packets)" % (ts, cid, cid)
            elif r < 0.85:
                line = "%s %d [Note] Event Scheduler: scheduler thread started with id %d" % (ts, cid, cid)
            elif r < 0.95:
                line = "%s 0 [Warning] Aborted connection 0 to db: 'unconnected' user: 'unauthenticated' host: 'connecting host' (Too many connections)" % ts
            else:
                line = "%s %d [ERROR] mariadbd: Table './wp/wp_options' is marked as crashed and should be repaired" % (ts, cid)
            f.write(line + "\n")


if __name__ == "__main__":
    os.makedirs(out, exist_ok=True)
    access()
    error()
    php_fpm()
    mariadb()
