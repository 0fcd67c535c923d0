//! `sekisho config` (and `check --print`): the effective config is itself a config that
//! `check` passes, and printing it again gives the same text (a fixpoint) but for the header
//! line naming the file. Run on the shipped configs, a minimal one (to see each default
//! written out) and one that sets many non-default values. No sockets: the binary only loads.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn sekisho(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sekisho"))
        .args(args)
        .env_remove("STATE_DIRECTORY")
        .env_remove("LOGS_DIRECTORY")
        .env_remove("SEKISHO_LOG")
        .output()
        .expect("sekisho runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `sekisho config -c path`'s stdout; it must succeed.
fn effective(path: &Path) -> String {
    let path = path.to_str().expect("a UTF-8 path");
    let out = sekisho(&["config", "-c", path]);
    assert!(
        out.status.success(),
        "sekisho config -c {path}: {}\n{}",
        out.status,
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// A file removed when dropped, also when the test fails.
struct Removed(PathBuf);

impl Drop for Removed {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The effective config of `original`, after checking that, saved beside it, it passes
/// `check` and prints the same again (its header naming each file).
fn effective_fixpoint(original: &Path) -> String {
    let first = effective(original);
    let (header, body) = first.split_once('\n').expect("a header line");
    assert_eq!(
        header,
        format!(
            "# The effective config of {} (sekisho {}).",
            original.display(),
            env!("CARGO_PKG_VERSION")
        )
    );
    assert!(
        body.starts_with("# Every key with the value sekisho runs with"),
        "{body}"
    );
    let stem = original.file_stem().and_then(|s| s.to_str()).expect("stem");
    let copy = original.with_file_name(format!(".effective-{stem}-{}.yaml", std::process::id()));
    let _removed = Removed(copy.clone());
    std::fs::write(&copy, &first).expect("write the effective config");
    let check = sekisho(&["check", "-c", copy.to_str().expect("UTF-8")]);
    assert!(
        check.status.success(),
        "check of the effective config of {}: {}\n{}\n--- it was:\n{first}",
        original.display(),
        text(&check.stdout),
        text(&check.stderr)
    );
    let second = effective(&copy);
    let (second_header, second_body) = second.split_once('\n').expect("a header line");
    assert!(
        second_header.contains(&copy.display().to_string()),
        "{second_header}"
    );
    assert_eq!(
        second_body, body,
        "printing the effective config again changed it"
    );
    first
}

fn conf(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("conf")
        .join(name)
}

fn assert_has(yaml: &str, part: &str) {
    assert!(yaml.contains(part), "missing {part:?} in:\n{yaml}");
}

#[test]
fn the_shipped_config_prints_a_config_that_loads_to_itself() {
    let yaml = effective_fixpoint(&conf("sekisho.yaml"));
    let deny = conf("deny.txt");
    assert_has(&yaml, &format!("\n    - {} # 2 entries\n", deny.display()));
    assert_has(
        &yaml,
        "\n- 127.0.0.1:8000 # resolved to 127.0.0.1:8000 at load\n",
    );
    assert_has(&yaml, "\nadmin:\n  listen: 127.0.0.1:9248\n");
    assert_has(
        &yaml,
        "\nreload:\n  watch: true\n  debounce: 100ms\n  poll_interval: 2s\n",
    );
    // a deny rule's defaulted mode and response, and a limit's defaulted status
    assert_has(
        &yaml,
        "\n- name: wp-probes\n  mode: enforce\n  match:\n    path_regex: ^/(wp-admin|wp-login\\.php|\\.env)\n  action: deny\n  response:\n    status: 403\n    body: |\n      Forbidden\n",
    );
    assert_has(
        &yaml,
        "\n- name: per-ip\n  mode: count\n  match: {}\n  limit:\n    rate: 20/s\n    burst: 100\n    key: ip\n    scope: local\n  response:\n    status: 403\n",
    );
    assert_has(&yaml, "\ndecision_log: null # off: no decision log\n");
    assert_has(&yaml, "  max_ban: 1d\n  mode: count\n");
    assert_has(&yaml, "    requests_per_second: null # not a trigger\n");
}

#[test]
fn the_japan_first_example_prints_a_config_that_loads_to_itself() {
    let yaml = effective_fixpoint(&conf("examples/japan-first.yaml"));
    assert_has(&yaml, "\n    country_not:\n    - JP\n    - ??\n");
    assert_has(&yaml, "\n    rate: 3/min\n    burst: 3\n    key: ip\n");
}

#[test]
fn a_minimal_config_prints_every_default() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("min.yaml");
    std::fs::write(
        &path,
        "upstreams: [\"127.0.0.1:8000\"]\n\
         rules:\n\
         \x20 - { name: probes, match: { path_prefix: /wp-admin }, action: deny }\n\
         \x20 - { name: slow, limit: { rate: 50/s } }\n",
    )
    .expect("write");
    let yaml = effective_fixpoint(&path);
    for part in [
        "\nlisten:\n- 127.0.0.1:8080\n",
        "\nwork_stealing: false\ngrace_period: 5s\ngraceful_shutdown_timeout: 10s\n",
        "\nupstream_options:\n  connect_timeout: 2s\n  read_timeout: 30s\n  write_timeout: 30s\n  idle_timeout: 1m\n  down_for: 10s\n  pool_size: 1024\n  forwarded_headers: true\n  forwarded: false\n  country_header: null # none\n",
        "\nclient_ip:\n  trusted_proxies: []\n  header: x-forwarded-for\n  ipv6_prefix: 64\n",
        "\nlists:\n  allow:\n    cidrs: []\n    files: []\n",
        "\n  deny:\n    cidrs: []\n    files: []\n    mode: enforce\n",
        "\nmax_tracked_keys: 1500000\n",
        "\nadmin:\n  listen: 127.0.0.1:9248\n",
        "\ngeo:\n  database: null # none\n  header: null # none\n",
        "\naccess_log: null # off: no access log\n",
        "\nmetrics:\n  countries: []\n",
        "\nreload:\n  watch: true\n  debounce: 100ms\n  poll_interval: 2s\n",
        "\n- name: probes\n  mode: enforce\n  match:\n    path_prefix: /wp-admin\n  action: deny\n  response:\n    status: 403\n    body: |\n      Forbidden\n",
        // burst defaults to the rate's count, the key to the address
        "\n- name: slow\n  mode: enforce\n  match: {}\n  limit:\n    rate: 50/s\n    burst: 50\n    key: ip\n    scope: local\n  response:\n    status: 403\n    body: |\n      Forbidden\n    retry_after: false\n",
        "\n  max_bans: 100000\n  max_tracked_offenders: 200000\n  ipv6_escalate_after: 8\n",
        "\nautoban: []\n",
        "\nunder_attack:\n  auto: null # off: the profile is switched by hand only\n  rules: []\n",
    ] {
        assert_has(&yaml, part);
    }
    let state = dir.path().join("sekisho-bans.json");
    assert_has(
        &yaml,
        &format!("\nbans:\n  state_file: {}\n", state.display()),
    );
}

#[test]
fn non_default_values_survive_the_round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    std::fs::create_dir(d.join("more")).expect("mkdir");
    std::fs::create_dir(d.join("state")).expect("mkdir");
    std::fs::write(
        d.join("allow.txt"),
        "# ours\n192.0.2.0/28\n2001:db8:1::/48\n",
    )
    .expect("w");
    std::fs::write(
        d.join("deny.txt"),
        "203.0.113.0/24\n203.0.113.9\n2001:db8:dead::/48\n",
    )
    .expect("w");
    std::fs::write(d.join("more/deny2.txt"), "198.18.0.0/15\n").expect("w");
    let path = d.join("busy.yaml");
    std::fs::write(
        &path,
        r##"
listen: ["127.0.0.1:18080", "[::1]:18080"]
threads: 3
work_stealing: true
grace_period: 1m
graceful_shutdown_timeout: 90s
upstreams: ["127.0.0.1:8000", "[::1]:8001"]
upstream_options:
  connect_timeout: 250ms
  read_timeout: 5s
  write_timeout: 7s
  idle_timeout: 2m
  down_for: 0s
  pool_size: 16
  forwarded: true
  country_header: X-Country-Code
client_ip:
  trusted_proxies: ["10.0.0.0/8", "2001:db8:100::/48", "192.0.2.7"]
  header: CF-Connecting-IP
  ipv6_prefix: 48
lists:
  allow: { cidrs: ["192.0.2.10"], files: [allow.txt] }
  deny: { files: [deny.txt, more/deny2.txt], cidrs: ["198.51.100.0/24"], mode: count }
max_tracked_keys: 5000
admin: { listen: "127.0.0.1:19248" }
geo: { header: CF-IPCountry }
decision_log: { path: decisions.log, sample_allowed: 0.25, queue: 100, max_lines_per_second: 0 }
access_log: { path: "-", format: json, queue: 10 }
metrics: { countries: [jp, US] }
reload: { watch: false, debounce: 250ms, poll_interval: 1h }
rules:
  - name: api
    match: { host: "*.Example.com", path_regex: "^/api/(v1|v2)/", methods: [get, POST], user_agent: "(?i)curl|wget" }
    limit: { rate: 300/min, burst: 50, key: "header:X-Api-Key" }
    response: { status: 429, body: "slow down: \"see #docs\"\n", retry_after: true }
    mode: count
  - name: per-path
    match: { path: /search, country_not: [JP, "??"] }
    limit: { rate: 7/d, key: ip_path }
  - name: by-country
    match: { country: [KP] }
    limit: { rate: 5000/h, burst: 5000, key: country }
  - name: "no"
    match: { path_prefix: /admin, country: ["NO"] }
    action: deny
    response: { status: 451, body: "yes" }
    mode: count
bans: { state_file: state/bans.json, max_bans: 10, max_tracked_offenders: 20, ipv6_escalate_after: 0 }
autoban:
  - { name: probers, statuses: [404, 410], more_than: 5, distinct_paths: 3, window: 30s, ban: 1h, max_ban: 7d, mode: count }
  - { name: trippers, kind: limited }
under_attack:
  auto: { requests_per_second: 20000, refused_per_second: 500, upstream_5xx_per_second: 50, for: 1m, quiet: 10m }
  rules:
    - name: attack-per-ip
      limit: { rate: 5/s, burst: 20 }
      mode: count
"##,
    )
    .expect("write");
    let yaml = effective_fixpoint(&path);
    let at = |p: &str| d.join(p).display().to_string();
    for part in [
        "\nthreads: 3\nwork_stealing: true\ngrace_period: 1m\ngraceful_shutdown_timeout: 90s\n".to_string(),
        "\n- \"[::1]:8001\" # resolved to [::1]:8001 at load\n".into(),
        "\n  down_for: 0s\n  pool_size: 16\n  forwarded_headers: true\n  forwarded: true\n  country_header: X-Country-Code\n".into(),
        "\n  trusted_proxies:\n  - 10.0.0.0/8\n  - 2001:db8:100::/48\n  - 192.0.2.7/32\n  header: cf-connecting-ip\n  ipv6_prefix: 48\n".into(),
        format!("\n    - {} # 2 entries\n", at("allow.txt")),
        format!("\n    - {} # 3 entries\n    - {} # 1 entry\n    mode: count\n", at("deny.txt"), at("more/deny2.txt")),
        "\nadmin:\n  listen: 127.0.0.1:19248\n".into(),
        "\n  header: cf-ipcountry\n".into(),
        format!("\ndecision_log:\n  path: {}\n  sample_allowed: 0.25\n  queue: 100\n  max_lines_per_second: 0\n", at("decisions.log")),
        "\naccess_log:\n  path: '-'\n  format: json\n  queue: 10\n".into(),
        "\nmetrics:\n  countries:\n  - JP\n  - US\n".into(),
        "\nreload:\n  watch: false\n  debounce: 250ms\n  poll_interval: 1h\n".into(),
        "\n- name: api\n  mode: count\n  match:\n    path_regex: ^/api/(v1|v2)/\n    methods:\n    - GET\n    - POST\n    host: \"*.example.com\"\n    user_agent: (?i)curl|wget\n  limit:\n    rate: 300/min\n    burst: 50\n    key: header:x-api-key\n".into(),
        "\n    rate: 7/d\n    burst: 7\n    key: ip_path\n".into(),
        "\n    key: country\n".into(),
        "\n  action: deny\n  response:\n    status: 451\n    body: \"yes\"\n".into(),
        format!("\nbans:\n  state_file: {}\n  max_bans: 10\n  max_tracked_offenders: 20\n  ipv6_escalate_after: 0\n", at("state/bans.json")),
        "\n- name: probers\n  kind: status\n  statuses:\n  - 404\n  - 410\n  more_than: 5\n  distinct_paths: 3\n  window: 30s\n  ban: 1h\n  max_ban: 7d\n  mode: count\n".into(),
        // a limited policy's defaults, and no statuses or distinct_paths (only for kind: status)
        "\n- name: trippers\n  kind: limited\n  more_than: 10\n  window: 1m\n  ban: 10m\n  max_ban: 1d\n  mode: enforce\n".into(),
        "\n  auto:\n    requests_per_second: 20000\n    refused_per_second: 500\n    upstream_5xx_per_second: 50\n    for: 1m\n    quiet: 10m\n".into(),
        "\n  - name: attack-per-ip\n    mode: count\n".into(),
    ] {
        assert_has(&yaml, &part);
    }
}

#[test]
fn a_broken_config_prints_its_errors_as_check_does_and_nothing_on_stdout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "upstreams: [\"127.0.0.1:8000\"]\nreload: { debounce: 10 }\nrules:\n  - { name: x, limit: { rate: 10/fortnight } }\n",
    )
    .expect("write");
    let p = path.to_str().expect("UTF-8");
    let config = sekisho(&["config", "-c", p]);
    let check = sekisho(&["check", "-c", p]);
    assert_eq!(config.status.code(), Some(1));
    assert_eq!(config.stdout, b"");
    assert_eq!(text(&config.stderr), text(&check.stderr));
    assert!(
        text(&config.stderr).contains("reload.debounce"),
        "{}",
        text(&config.stderr)
    );
    // `check --print` is `config`
    let shipped = conf("sekisho.yaml");
    let s = shipped.to_str().expect("UTF-8");
    assert_eq!(
        sekisho(&["check", "--print", "-c", s]).stdout,
        sekisho(&["config", "-c", s]).stdout
    );
}
