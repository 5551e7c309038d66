//! WordPress end to end: Debian's real `wordpress` package on the lab's nginx, PHP-FPM and
//! MariaDB (installed with its own `wp_install()`, no WP-CLI), five plugins written by the
//! test, one of which breaks `/checkout/` after an "update". The audit must blame that plugin
//! with its version and the exact fix; `wp isolate` must find it on a throwaway copy in
//! ⌈log2 n⌉ + 1 page loads or fewer, report a two-plugin conflict as a pair and a healthy page
//! as "not a plugin"; and the live site's options table and document root must be byte for
//! byte the same afterwards. No secret from wp-config.php may appear in any output.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::lab::{self, Lab, LabOptions};
use crate::util::cmd::{agent, bounded, DEFAULT_DEADLINE};

const DB_PASS: &str = "shop-pw-Zq81-never-printed";
const SALT: &str = "salt-Kx77-never-printed";

/// The lab-wp.php helper of the research lab: boots WordPress from the CLI (HTTP blocked,
/// mail stubbed) to install it and activate plugins the way wp-admin does.
const WP_TOOL: &str = r#"<?php
[, $doc, $host, $cmd] = $argv + [null, null, null, null];
$args = array_slice($argv, 4);
$_SERVER['HTTP_HOST'] = $host;
$_SERVER['SERVER_NAME'] = preg_replace('/:.*/', '', $host);
$_SERVER['REQUEST_URI'] = '/';
$_SERVER['REQUEST_METHOD'] = 'GET';
$_SERVER['SCRIPT_NAME'] = $_SERVER['PHP_SELF'] = '/index.php';
$_SERVER['SCRIPT_FILENAME'] = $doc . '/index.php';
function lab_no_http($pre, $a, $url) { return new WP_Error('lab_offline', "lab: HTTP blocked ($url)"); }
$GLOBALS['wp_filter'] = ['pre_http_request' => [10 => [['function' => 'lab_no_http', 'accepted_args' => 3]]]];
function wp_mail(...$a) { return true; }
if ($cmd === 'install') define('WP_INSTALLING', true);
require $doc . '/wp-load.php';
if ($cmd === 'install') {
    require_once ABSPATH . 'wp-admin/includes/upgrade.php';
    if (!is_blog_installed()) wp_install('Shop', 'admin', 'admin@shop.test', false, '', 'admin-pw');
    update_option('siteurl', $args[0]);
    update_option('home', $args[0]);
    update_option('template', 'lab-shop');
    update_option('stylesheet', 'lab-shop');
    foreach (['shop' => 'Shop', 'checkout' => 'Checkout'] as $slug => $title) {
        wp_insert_post(['post_type' => 'page', 'post_status' => 'publish', 'post_name' => $slug,
                        'post_title' => $title, 'post_content' => "<p>$title page</p>"]);
    }
    update_option('permalink_structure', '/%postname%/');
    $GLOBALS['wp_rewrite']->init();
    flush_rewrite_rules(false);
} elseif ($cmd === 'activate') {
    require_once ABSPATH . 'wp-admin/includes/plugin.php';
    foreach ($args as $p) {
        $r = activate_plugin($p);
        if (is_wp_error($r)) { fwrite(STDERR, "$p: " . $r->get_error_message() . "\n"); exit(1); }
    }
}
"#;

fn plugin(dir: &Path, slug: &str, name: &str, version: &str, body: &str) {
    let d = dir.join(slug);
    fs::create_dir_all(&d).unwrap();
    fs::write(
        d.join(format!("{slug}.php")),
        format!("<?php\n/**\n * Plugin Name: {name}\n * Version: {version}\n */\ndefined('ABSPATH') || exit;\n{body}\n"),
    )
    .unwrap();
}

const PAY_OK: &str = r#"add_action("template_redirect", "pay_gateway_checkout");
function pay_gateway_checkout() {
    if (!is_page("checkout")) return;
    add_filter("the_content", function ($c) { return $c . "<p>Pay with Pay Gateway</p>"; });
}"#;
const PAY_BROKEN: &str = r#"add_action("template_redirect", "pay_gateway_checkout");
function pay_gateway_checkout() {
    if (!is_page("checkout")) return;
    $sdk = new Pay_Gateway_Sdk_V2(get_option("pay_gateway_key", ""));
}"#;

struct Site {
    lab: Lab,
    port: u16,
    docroot: PathBuf,
    config: PathBuf,
}

fn run(cmd: &mut Command) -> (i32, String, String) {
    let (out, _) = bounded(cmd, None, DEFAULT_DEADLINE);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn start() -> Option<Site> {
    if !Path::new("/usr/share/wordpress/wp-settings.php").is_file() {
        crate::skip("Debian's wordpress package is not installed (scripts/install-test-deps.sh)");
        return None;
    }
    if !Path::new("/usr/bin/php").exists() || !Path::new("/usr/bin/setpriv").exists() {
        crate::skip("php-cli or setpriv is not installed (scripts/install-test-deps.sh)");
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let opts = LabOptions {
        mariadb: true,
        // PHP errors reach nginx's error log as `FastCGI sent in stderr`, as on a stock pool.
        php_error_log: false,
        memory_limit: "128M".into(),
        // The OPcache trap: FPM would serve the old plugin code for up to 2 s after an update.
        extra_pool: "php_admin_flag[opcache.enable] = off\n".into(),
        nginx_http_extra: format!(
            r#"    server {{
        listen 127.0.0.1:{port};
        server_name shop.test;
        root {{lab}}/wp/shop.test;
        index index.php;
        location / {{ try_files $uri $uri/ /index.php?$args; }}
        location ~ \.php$ {{
            try_files $uri =404;
            include {{lab}}/fastcgi_params;
            fastcgi_pass unix:{{lab}}/run/php-fpm.sock;
        }}
    }}"#
        ),
        ..LabOptions::default()
    };
    let lab = lab::start_or_skip(opts)?;
    let docroot = lab.dir().join("wp/shop.test");
    fs::create_dir_all(lab.dir().join("wp")).unwrap();
    let (code, _, err) = run(Command::new("cp")
        .args(["-a", "/usr/share/wordpress/."])
        .arg(&docroot));
    assert_eq!(code, 0, "cp: {err}");
    fs::remove_file(docroot.join("wp-config.php")).unwrap();
    let sock = lab.mariadb_socket();
    let salts: String = origin_agent::wp::config::SALT_KEYS
        .iter()
        .map(|k| format!("define('{k}', '{SALT}-{k}');\n"))
        .collect();
    fs::write(
        docroot.join("wp-config.php"),
        format!(
            "<?php\ndefine('DB_NAME', 'shop');\ndefine('DB_USER', 'shop');\ndefine('DB_PASSWORD', '{DB_PASS}');\ndefine('DB_HOST', 'localhost:{}');\ndefine('DB_CHARSET', 'utf8mb4');\n{salts}$table_prefix = 'wp_';\ndefine('WP_MEMORY_LIMIT', '256M');\ndefine('DISABLE_WP_CRON', true);\ndefine('WP_HTTP_BLOCK_EXTERNAL', true);\ndefine('AUTOMATIC_UPDATER_DISABLED', true);\nif (!defined('ABSPATH')) define('ABSPATH', __DIR__ . '/');\nrequire_once ABSPATH . 'wp-settings.php';\n",
            sock.display()
        ),
    )
    .unwrap();
    let content = docroot.join("wp-content");
    let plugins = content.join("plugins");
    plugin(
        &plugins,
        "shop-core",
        "Shop Core",
        "1.4.2",
        r#"add_action("wp_footer", function () { echo "<p>shop-core</p>"; });"#,
    );
    plugin(
        &plugins,
        "acme-seo",
        "Acme SEO",
        "2.0.1",
        r#"add_action("wp_head", function () { echo "<meta name=\"description\" content=\"shop\">"; });"#,
    );
    plugin(&plugins, "pay-gateway", "Pay Gateway", "3.1.0", PAY_OK);
    plugin(
        &plugins,
        "cache-boost",
        "Cache Boost",
        "1.0.0",
        r#"function asset_version_hash($f) { return substr(md5($f), 0, 8); }"#,
    );
    plugin(
        &plugins,
        "mail-log",
        "Mail Log",
        "0.9.3",
        r#"add_filter("pre_wp_mail", function ($r) { return true; });"#,
    );
    // Inactive: declares the same function as cache-boost (both active = "Cannot redeclare").
    plugin(
        &plugins,
        "lazy-images",
        "Lazy Images",
        "1.2.0",
        r#"function asset_version_hash($f) { return hash("crc32b", $f); }"#,
    );
    let theme = content.join("themes/lab-shop");
    fs::create_dir_all(&theme).unwrap();
    fs::write(
        theme.join("style.css"),
        "/*\nTheme Name: Lab Shop\nVersion: 1.0.0\n*/\n",
    )
    .unwrap();
    fs::write(
        theme.join("index.php"),
        "<!doctype html><html><head><?php wp_head(); ?></head><body>\n<?php while (have_posts()) { the_post(); the_title(); the_content(); } ?>\n<?php wp_footer(); ?></body></html>\n",
    )
    .unwrap();
    fs::create_dir_all(content.join("uploads")).unwrap();
    run(Command::new("chown")
        .args(["-R", "www-data:www-data"])
        .arg(content.join("uploads")));
    run(Command::new("chmod").args(["-R", "a+rX"]).arg(&docroot));
    lab.mariadb_sql(&format!(
        "CREATE DATABASE shop CHARACTER SET utf8mb4; CREATE USER 'shop'@'localhost' IDENTIFIED BY '{DB_PASS}'; GRANT ALL ON shop.* TO 'shop'@'localhost';"
    ))
    .unwrap();
    let tool = lab.dir().join("wp-tool.php");
    fs::write(&tool, WP_TOOL).unwrap();
    let wp = |args: &[&str]| {
        let (code, out, err) = run(Command::new("setpriv")
            .args([
                "--reuid=www-data",
                "--regid=www-data",
                "--init-groups",
                "php",
            ])
            .arg(&tool)
            .arg(&docroot)
            .arg(format!("127.0.0.1:{port}"))
            .args(args));
        assert_eq!(code, 0, "wp-tool {args:?}: {out}{err}");
    };
    wp(&["install", &format!("http://127.0.0.1:{port}")]);
    wp(&[
        "activate",
        "shop-core/shop-core.php",
        "acme-seo/acme-seo.php",
        "pay-gateway/pay-gateway.php",
        "cache-boost/cache-boost.php",
        "mail-log/mail-log.php",
    ]);
    let config = lab.dir().join("agent.yaml");
    fs::write(&config, lab.agent_config_yaml()).unwrap();
    fs::create_dir_all(lab.dir().join("work")).unwrap();
    Some(Site {
        lab,
        port,
        docroot,
        config,
    })
}

fn get(port: u16, path: &str) -> u16 {
    lab::http_get(port, path, "wp-e2e", Duration::from_secs(20)).status
}

/// GET `path` on the live site answers `status` (else the test fails with nginx's error log).
fn expect(site: &Site, path: &str, status: u16) {
    let got = get(site.port, path);
    assert_eq!(
        got,
        status,
        "GET {path}: {}",
        lab::tail(&site.lab.error_log(), 2000)
    );
}

/// The live `wp_options` rows, in order.
fn options_rows(lab: &Lab) -> String {
    lab.mariadb_sql("SELECT option_id, option_name, HEX(option_value), autoload FROM shop.wp_options ORDER BY option_id")
        .unwrap()
}

/// Every entry under `root` (names, kinds, modes, owners, sizes, mtimes, contents; symlinks
/// not followed), hashed.
fn tree_hash(root: &Path) -> String {
    // As the research lab checks it: every entry's metadata, then every file's sha256.
    let script = "find . -printf '%p %y %m %u %g %s %T@ %l\\n' | LC_ALL=C sort; find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum";
    let (out, _) = bounded(
        Command::new("sh").args(["-c", script]).current_dir(root),
        None,
        DEFAULT_DEADLINE,
    );
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `wp isolate` on the live site's copy: its stdout (JSON or the human text) and progress.
fn isolate_run(site: &Site, url: &str, json: bool) -> (String, String) {
    let t = std::time::Instant::now();
    let mut cmd = agent();
    cmd.args([
        "wp",
        "isolate",
        "--site",
        "shop.test",
        "--url",
        url,
        "--config",
    ])
    .arg(&site.config)
    .arg("--work-dir")
    .arg(site.lab.dir().join("work"));
    if json {
        cmd.arg("--json");
    }
    let (code, out, err) = run(&mut cmd);
    eprintln!(
        "wp isolate {url} took {:.1} s:\n{err}",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(code, 0, "wp isolate {url}: {out}\n{err}");
    for secret in [DB_PASS, SALT] {
        assert!(
            !out.contains(secret) && !err.contains(secret),
            "a secret was printed:\n{out}\n{err}"
        );
    }
    (out, err)
}

fn isolate(site: &Site, url: &str) -> (serde_json::Value, String) {
    let (out, err) = isolate_run(site, url, true);
    (
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}")),
        err,
    )
}

/// The live site's options table and document root are what they were.
fn unchanged(site: &Site, options_before: &str, tree_before: &str) {
    assert_eq!(
        options_rows(&site.lab),
        options_before,
        "the live wp_options changed"
    );
    assert_eq!(
        tree_hash(&site.docroot),
        tree_before,
        "the live document root changed"
    );
}

fn leftovers(site: &Site) {
    let dbs = site
        .lab
        .mariadb_sql("SHOW DATABASES LIKE 'oa\\_wp\\_copy\\_%'")
        .unwrap();
    assert!(dbs.trim().is_empty(), "temporary databases left: {dbs}");
    let users = site
        .lab
        .mariadb_sql("SELECT user FROM mysql.user WHERE user LIKE 'oa\\_wp\\_copy\\_%'")
        .unwrap();
    assert!(users.trim().is_empty(), "temporary users left: {users}");
    let work: Vec<_> = fs::read_dir(site.lab.dir().join("work")).unwrap().collect();
    assert!(work.is_empty(), "copies left in the work dir: {work:?}");
    assert!(!site
        .lab
        .dir()
        .join("agent-state/wp-isolate.journal.json")
        .exists());
}

#[test]
fn wordpress_blame_and_isolate_on_a_copy() {
    let t0 = std::time::Instant::now();
    let Some(site) = start() else { return };
    eprintln!(
        "lab and WordPress up in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let port = site.port;
    expect(&site, "/", 200);
    expect(&site, "/checkout/", 200);

    // The "update": pay-gateway 3.2.0 dies on /checkout/ only.
    plugin(
        &site.docroot.join("wp-content/plugins"),
        "pay-gateway",
        "Pay Gateway",
        "3.2.0",
        PAY_BROKEN,
    );
    run(Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(site.docroot.join("wp-content/plugins")));
    for _ in 0..3 {
        expect(&site, "/checkout/", 500);
    }
    assert_eq!(get(port, "/"), 200);
    assert!(
        lab::wait_until(Duration::from_secs(5), || {
            fs::read_to_string(site.lab.error_log())
                .unwrap_or_default()
                .contains("Pay_Gateway_Sdk_V2")
        }),
        "php error log: {}\nnginx: {}\nfpm: {}",
        lab::tail(&site.lab.php_error_log(), 1500),
        lab::tail(&site.lab.error_log(), 1500),
        lab::tail(&site.lab.php_fpm_log(), 1500)
    );

    // The audit blames pay-gateway 3.2.0 on /checkout/ and says how to deactivate it.
    let t = std::time::Instant::now();
    let (_, out, err) = run(agent()
        .args(["audit", "--json", "--since", "10m", "--config"])
        .arg(&site.config));
    for secret in [DB_PASS, SALT] {
        assert!(
            !out.contains(secret) && !err.contains(secret),
            "a secret was printed by the audit"
        );
    }
    eprintln!("audit took {:.1} s", t.elapsed().as_secs_f64());
    let report: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"));
    let checks = report["checks"].as_array().unwrap();
    let blame = checks
        .iter()
        .find(|c| c["id"] == "wordpress.blame.pay-gateway")
        .unwrap_or_else(|| {
            panic!(
                "no blame check: {:#}",
                serde_json::Value::Array(
                    checks
                        .iter()
                        .filter(|c| c["area"] == "wordpress")
                        .cloned()
                        .collect()
                )
            )
        });
    let title = blame["title"].as_str().unwrap();
    assert!(
        title.contains("plugin `pay-gateway` 3.2.0")
            && title.contains("3 fatal errors")
            && title.contains("all on /checkout/"),
        "{title}"
    );
    assert!(
        title.contains("files changed"),
        "the update is evidence: {title}"
    );
    let site_check = checks
        .iter()
        .find(|c| c["id"] == "wordpress.site.shop.test")
        .expect("site check");
    assert!(
        site_check["detail"]
            .as_str()
            .unwrap()
            .contains("5 active plugins"),
        "{site_check}"
    );
    let cause = &report["causes"][0];
    assert_eq!(cause["id"], "app.fatal-error", "{:#}", report["causes"]);
    let fix = cause["fix"].as_str().unwrap();
    assert!(
        fix.contains("`pay-gateway` 3.2.0") && fix.contains("/wp-content/plugins/pay-gateway"),
        "{fix}"
    );

    let (options_before, tree_before) = (options_rows(&site.lab), tree_hash(&site.docroot));

    // Isolation on a copy: found in at most ceil(log2 5) + 1 = 4 page loads.
    let (single, progress) = isolate(&site, "/checkout/");
    assert_eq!(
        single["finding"]["result"], "plugin",
        "{single:#}\n{progress}"
    );
    assert_eq!(single["finding"]["slug"], "pay-gateway");
    assert_eq!(single["finding"]["version"], "3.2.0");
    let loads = single["loads"].as_array().unwrap().len();
    assert!(loads <= 4, "{loads} page loads: {single:#}");
    assert!(progress.contains("step 2 of 3"), "progress: {progress}");
    leftovers(&site);

    // A page that works: not a plugin (the human text this time).
    let (text, _) = isolate_run(&site, "/", false);
    assert!(
        text.contains("the page works with all plugins: not a plugin"),
        "{text}"
    );
    leftovers(&site);
    unchanged(&site, &options_before, &tree_before);

    // A two-plugin conflict (each fine alone) on the live site: reported as a pair.
    site.lab
        .mariadb_sql(&format!(
            "UPDATE shop.wp_options SET option_value = '{}' WHERE option_name = 'active_plugins'",
            serialize(&[
                "acme-seo/acme-seo.php",
                "cache-boost/cache-boost.php",
                "lazy-images/lazy-images.php",
                "mail-log/mail-log.php",
                "pay-gateway/pay-gateway.php",
                "shop-core/shop-core.php"
            ])
        ))
        .unwrap();
    assert_eq!(get(port, "/"), 500);
    let (options_before, tree_before) = (options_rows(&site.lab), tree_hash(&site.docroot));
    let (pair, progress) = isolate(&site, "/");
    assert_eq!(pair["finding"]["result"], "pair", "{pair:#}\n{progress}");
    let names: BTreeMap<String, String> = pair["finding"]["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p[0].as_str().unwrap().to_string(),
                p[1].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        names,
        BTreeMap::from([
            ("cache-boost".into(), "1.0.0".into()),
            ("lazy-images".into(), "1.2.0".into())
        ])
    );
    leftovers(&site);
    unchanged(&site, &options_before, &tree_before);

    // A snapshot of this host holds no secret of wp-config.php.
    let snap = site.lab.dir().join("snap");
    let (code, out, err) = run(agent()
        .args(["collect", "--config"])
        .arg(&site.config)
        .arg("--out")
        .arg(&snap));
    assert_eq!(code, 0, "collect: {out}{err}");
    let (_, hits, _) = run(Command::new("grep").args(["-rlF", DB_PASS]).arg(&snap));
    let (_, salt_hits, _) = run(Command::new("grep").args(["-rlF", SALT]).arg(&snap));
    assert!(
        hits.is_empty() && salt_hits.is_empty(),
        "secrets in the snapshot: {hits}{salt_hits}"
    );
    let (_, site_hits, _) = run(Command::new("grep")
        .args(["-rlF", "pay-gateway"])
        .arg(&snap));
    assert!(!site_hits.is_empty(), "the snapshot holds the site's files");

    // `wp sites --json` names the site and prints no secret.
    let (code, out, _) = run(agent()
        .args(["wp", "sites", "--json", "--config"])
        .arg(&site.config));
    assert_eq!(code, 0);
    eprintln!("test body done at {:.1} s", t0.elapsed().as_secs_f64());
    assert!(
        out.contains("\"shop.test\"") && !out.contains(DB_PASS) && !out.contains(SALT),
        "{out}"
    );
}

/// `serialize(array_values($files))` as PHP writes it.
fn serialize(files: &[&str]) -> String {
    let mut s = format!("a:{}:{{", files.len());
    for (i, f) in files.iter().enumerate() {
        s.push_str(&format!("i:{i};s:{}:\"{f}\";", f.len()));
    }
    s.push('}');
    s
}
