//! Config tests: YAML text in, a model or positioned errors out.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::defense::{StatusSet, Trigger};
use crate::engine::Mode;

fn parse_str(text: &str) -> Result<Config, ConfigErrors> {
    parse(text, Path::new("t.yaml"), &SlotRegistry::default())
}

fn errors(text: &str) -> Vec<String> {
    match parse_str(text) {
        Ok(_) => panic!("expected errors for:\n{text}"),
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

/// `errors` holds one line starting with each of `want`, and nothing else.
fn assert_exactly(errors: &[String], want: &[&str]) {
    for w in want {
        assert!(
            errors.iter().any(|l| l.starts_with(w)),
            "missing {w:?} in:\n{}",
            errors.join("\n")
        );
    }
    assert_eq!(errors.len(), want.len(), "{}", errors.join("\n"));
}

#[test]
fn the_issue_example_parses() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("conf")).unwrap();
    std::fs::write(dir.path().join("conf/deny.txt"), "203.0.113.0/24\n").unwrap();
    let text = r#"
listen: ["0.0.0.0:8080", "[::]:8080"]
upstreams: ["127.0.0.1:8000"]
client_ip:
  trusted_proxies: ["10.0.0.0/8"]
  header: X-Forwarded-For
  ipv6_prefix: 64
lists:
  allow: { cidrs: ["192.0.2.10/32"] }
  deny: { files: ["conf/deny.txt"], cidrs: ["198.51.100.0/24"] }
max_tracked_keys: 1000000
rules:
  - name: login
    match: { path_prefix: /login, methods: [POST] }
    limit: { rate: 5/min, burst: 10, key: ip }
    response: { status: 429, retry_after: true }
  - name: scraper-ua
    match: { user_agent: "(?i)msnbot|bingbot" }
    limit: { rate: 1/s, burst: 5, key: ip }
  - name: wp-probes
    match: { path_regex: "^/(wp-admin|wp-login\\.php|\\.env)" }
    action: deny
  - name: per-ip
    limit: { rate: 20/s, burst: 100, key: ip }
    mode: count
"#;
    let c = parse(
        text,
        &dir.path().join("sekisho.yaml"),
        &SlotRegistry::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.listen.len(), 2);
    assert_eq!(c.policy.rules.len(), 4);
    assert_eq!(c.policy.deny.entries(), 2);
    assert_eq!(c.policy.rules[0].response.status, 429);
    assert!(c.policy.rules[0].response.retry_after);
    assert_eq!(c.policy.rules[3].mode, Mode::Count);
    assert_eq!(c.max_tracked_keys, 1_000_000);
    assert_eq!(c.list_files.len(), 1);
}

#[test]
fn defaults_are_safe() {
    let c = parse_str("upstreams: [\"127.0.0.1:8000\"]\n").unwrap();
    assert_eq!(c.listen, vec!["127.0.0.1:8080".parse().unwrap()]);
    assert_eq!(c.grace_period, Duration::from_secs(5));
    assert_eq!(c.client_ip.ipv6_prefix, 64);
    assert!(c.client_ip.trusted_proxies.is_empty());
    assert_eq!(c.max_tracked_keys, DEFAULT_MAX_TRACKED_KEYS);
    assert!(c.policy.rules.is_empty());
    assert!(
        !c.work_stealing,
        "connections stay on their thread by default"
    );
    let c = parse_str("upstreams: [\"127.0.0.1:8000\"]\nwork_stealing: true\n").unwrap();
    assert!(c.work_stealing);
}

#[test]
fn unknown_key_names_line_column_and_field() {
    let e = errors(
        "upstreams: [\"127.0.0.1:8000\"]\nrules:\n  - name: a\n    limit:\n      rat: 5/s\n",
    );
    assert_eq!(e.len(), 1);
    assert!(
        e[0].starts_with("t.yaml:5:7: rules[0].limit.rat: unknown field `rat`"),
        "{}",
        e[0]
    );
}

#[test]
fn yaml_syntax_error_has_a_position() {
    let e = errors("upstreams: [\"127.0.0.1:8000\"\nrules: [\n");
    assert!(e[0].starts_with("t.yaml:"), "{}", e[0]);
    assert!(!e[0].starts_with("t.yaml:0:0"), "{}", e[0]);
}

#[test]
fn every_validation_error_is_reported_with_its_position() {
    let text = "\
upstreams: [\"127.0.0.1:8000\"]
listen: [\"0.0.0.0\"]
grace_period: 5
client_ip: { trusted_proxies: [10.0.0.0/33], ipv6_prefix: 129 }
lists:
  deny: { cidrs: [\"not-an-ip\"] }
rules:
  - name: a
    limit: { rate: 10/x }
  - name: a
    action: deny
  - name: both
    action: deny
    limit: { rate: 1/s }
  - name: neither
  - name: badkey
    limit: { rate: 1/s, burst: 0 }
  - name: k
    limit: { rate: 1/s, key: cookie }
  - name: m
    match: { path_prefix: login, path_regex: \"(\", methods: [\"G3T\"] }
    action: deny
    response: { status: 700, retry_after: true }
";
    let e = errors(text);
    let want = [
        "t.yaml:2:10: listen[0]:",
        "t.yaml:3:15: grace_period: \"5\" needs a unit",
        "t.yaml:4:32: client_ip.trusted_proxies[0]:",
        "t.yaml:4:59: client_ip.ipv6_prefix:",
        "t.yaml:6:19: lists.deny.cidrs[0]:",
        "t.yaml:9:20: rules[0].limit.rate: unknown unit \"x\"",
        "t.yaml:10:11: rules[1].name: duplicate rule name \"a\"",
        "t.yaml:13:13: rules[2].action: give either",
        "t.yaml:15:11: rules[3]: a rule needs",
        "t.yaml:17:32: rules[4].limit.burst: must be at least 1",
        "t.yaml:19:30: rules[5].limit.key:",
        "t.yaml:21:27: rules[6].match.path_prefix:",
        "t.yaml:21:46: rules[6].match.path_regex: bad regex",
        "t.yaml:21:61: rules[6].match.methods[0]:",
        "t.yaml:23:25: rules[6].response.status:",
        "t.yaml:23:43: rules[6].response.retry_after:",
    ];
    assert_exactly(&e, &want);
}

#[test]
fn list_file_errors_name_the_list_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut f = std::fs::File::create(dir.path().join("deny.txt")).unwrap();
    for i in 0..1000 {
        writeln!(f, "10.{}.{}.0/24", i / 256, i % 256).unwrap();
    }
    writeln!(
        f,
        "# comment\n10.99.0.0/16 # trailing comment\n  10.0.0.300"
    )
    .unwrap();
    drop(f);
    let cfg = dir.path().join("s.yaml");
    let text =
        "upstreams: [\"127.0.0.1:8000\"]\nlists:\n  deny: { files: [deny.txt, missing.txt] }\n";
    let e = parse(text, &cfg, &SlotRegistry::default()).unwrap_err();
    let lines: Vec<String> = e.0.iter().map(ToString::to_string).collect();
    let deny = dir.path().join("deny.txt");
    assert!(
        lines.iter().any(|l| l.starts_with(&format!(
            "{}:1003:3: lists.deny.files[0]: \"10.0.0.300\"",
            deny.display()
        ))),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains(":3:29: lists.deny.files[1]: cannot read list file")),
        "{lines:?}"
    );
}

#[test]
fn durations() {
    assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
    assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
    assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
    assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
    assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
    assert_eq!(
        parse_duration("365d"),
        Ok(Duration::from_secs(365 * 86_400))
    );
    assert_eq!(parse_duration("2min"), Ok(Duration::from_secs(120)));
    assert!(parse_duration("99999999999999999999d").is_err());
    assert!(parse_duration("18446744073709551615d").is_ok(), "saturates");
    for (d, s) in [
        (Duration::ZERO, "0s"),
        (Duration::from_millis(1), "1ms"),
        (Duration::from_millis(1500), "1500ms"),
        (Duration::from_secs(90), "90s"),
        (Duration::from_secs(5400), "90m"),
        (Duration::from_secs(3600), "1h"),
        (Duration::from_secs(86_400), "1d"),
        (Duration::from_secs(365 * 86_400), "365d"),
    ] {
        assert_eq!(format_duration(d), s);
        assert_eq!(parse_duration(s), Ok(d), "{s} reads back");
    }
    assert!(parse_duration("5").is_err());
    assert!(parse_duration("5 parsecs").is_err());
    assert!(parse_duration("").is_err());
}

#[test]
fn shipped_configs_validate() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf");
    let mut n = 0;
    for dir in [root.clone(), root.join("examples")] {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let p = entry.unwrap().path();
            if p.extension().is_some_and(|e| e == "yaml") {
                let c = load(&p, &SlotRegistry::default()).unwrap_or_else(|e| panic!("{e}"));
                assert!(
                    c.warnings.is_empty(),
                    "{}: a shipped config warns:\n{}",
                    p.display(),
                    c.warnings
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("\n")
                );
                n += 1;
            }
        }
    }
    assert!(n >= 2);
}

#[test]
fn a_reload_reads_only_the_list_file_that_changed() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.txt");
    let b = dir.path().join("b.txt");
    std::fs::write(&a, "10.0.0.0/8\n").unwrap();
    std::fs::write(&b, "192.0.2.0/24\n").unwrap();
    let cfg = dir.path().join("s.yaml");
    std::fs::write(
        &cfg,
        "upstreams: [\"127.0.0.1:8000\"]\nlists:\n  allow: { files: [a.txt] }\n  deny: { files: [b.txt] }\n",
    )
    .unwrap();
    let slots = SlotRegistry::default();
    let mut cache = ListCache::default();
    let first = load_cached(&cfg, &slots, &mut cache).unwrap();
    assert_eq!((cache.files_read, cache.files_parsed), (2, 2));
    // nothing changed: nothing read, the sets are the same objects
    let again = load_cached(&cfg, &slots, &mut cache).unwrap();
    assert_eq!(cache.files_read, 2);
    assert!(Arc::ptr_eq(&first.policy.deny, &again.policy.deny));
    // replace b.txt by rename: only b is read and parsed, a's set is reused
    let tmp = dir.path().join("b.tmp");
    std::fs::write(&tmp, "192.0.2.0/24\n198.51.100.0/24\n").unwrap();
    std::fs::rename(&tmp, &b).unwrap();
    let third = load_cached(&cfg, &slots, &mut cache).unwrap();
    assert_eq!((cache.files_read, cache.files_parsed), (3, 3));
    assert!(Arc::ptr_eq(&first.policy.allow, &third.policy.allow));
    assert_eq!(third.policy.deny.entries(), 2);
    // touched but not changed: read, not parsed
    let tmp = dir.path().join("a.tmp");
    std::fs::write(&tmp, "10.0.0.0/8\n").unwrap();
    std::fs::rename(&tmp, &a).unwrap();
    load_cached(&cfg, &slots, &mut cache).unwrap();
    assert_eq!((cache.files_read, cache.files_parsed), (4, 3));
    // a bad line is an error and the cache keeps the last good parse for the next try
    std::fs::write(&b, "192.0.2.0/24\nnope\n").unwrap();
    let e = load_cached(&cfg, &slots, &mut cache).unwrap_err();
    assert!(
        e.to_string().contains("b.txt:2:1: lists.deny.files[0]"),
        "{e}"
    );
}

#[test]
fn values_that_could_never_work_are_refused() {
    let text = "\
upstreams: [\"127.0.0.1:8000\"]
upstream_options: { connect_timeout: 0s, pool_size: 0 }
grace_period: 500ms
lists:
  allow: { cidrs: [10.0.0.1], mode: count }
rules:
  - name: a
    match: { path: \"/x?y=1\", host: \"foo.*.com\" }
    action: deny
    response: { status: 204 }
  - name: b
    match: { path_prefix: \"//x/../y\" }
    limit: { rate: 700000000/s }
";
    let e = errors(text);
    let want = [
        "t.yaml:2:38: upstream_options.connect_timeout:",
        "t.yaml:2:53: upstream_options.pool_size:",
        "t.yaml:3:15: grace_period:",
        "t.yaml:5:37: lists.allow.mode:",
        "t.yaml:8:20: rules[0].match.path:",
        "t.yaml:8:36: rules[0].match.host:",
        "t.yaml:10:25: rules[0].response.status:",
        "t.yaml:12:27: rules[1].match.path_prefix:",
        "t.yaml:13:20: rules[1].limit.rate:",
    ];
    assert_exactly(&e, &want);
}

#[test]
fn geo_settings_are_checked() {
    let e = errors(
        "upstreams: [\"127.0.0.1:8000\"]\ngeo: { database: nowhere.mmdb, header: \"bad header\" }\nrules:\n  - name: a\n    match: { country: [JPN] }\n    action: deny\n",
    );
    assert_exactly(
        &e,
        &[
            "t.yaml:2:18: geo.database: cannot read",
            "t.yaml:2:40: geo.header:",
            "t.yaml:5:24: rules[0].match.country[0]: \"JPN\" is not a two-letter country code",
        ],
    );
    let e = errors("upstreams: [\"127.0.0.1:8000\"]\nrules:\n  - name: a\n    match: { country_not: [JP] }\n    action: deny\n");
    assert_exactly(&e, &["t.yaml:4:28: rules[0].match.country_not: country rules need geo.database or geo.header"]);
    // in the under-attack profile too, and a limit keyed by country is named where it is
    let e = errors("upstreams: [\"127.0.0.1:8000\"]\nunder_attack:\n  rules:\n    - name: a\n      match: { country: [JP] }\n      action: deny\n");
    assert_exactly(
        &e,
        &["t.yaml:5:26: under_attack.rules[0].match.country: country rules need"],
    );
    let e = errors("upstreams: [\"127.0.0.1:8000\"]\nrules:\n  - name: a\n    limit: { rate: 1/s, key: country }\n");
    assert_exactly(
        &e,
        &["t.yaml:4:30: rules[0].limit.key: a limit keyed by country needs"],
    );
}

#[test]
fn forwarding_keys_default_and_parse() {
    let c = parse_str("upstreams: [\"127.0.0.1:8000\"]\n").unwrap_or_else(|e| panic!("{e}"));
    let o = &c.upstream_options;
    assert!(o.forwarded_headers);
    assert!(!o.forwarded);
    assert_eq!(o.country_header, None);
    let c = parse_str(
        "upstreams: [\"127.0.0.1:8000\"]\ngeo: { header: CF-IPCountry }\nupstream_options: { forwarded: true, country_header: \" X-Country-Code \" }\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let o = &c.upstream_options;
    assert!(o.forwarded_headers && o.forwarded);
    let (written, name) = o.country_header.as_ref().expect("country header");
    assert_eq!(
        (written.as_str(), name.as_str()),
        ("X-Country-Code", "x-country-code")
    );
    let c = parse_str(
        "upstreams: [\"127.0.0.1:8000\"]\nupstream_options: { forwarded_headers: false }\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(!c.upstream_options.forwarded_headers);
}

#[test]
fn forwarding_keys_that_could_never_work_are_refused() {
    let e = errors(
        "upstreams: [\"127.0.0.1:8000\"]\nupstream_options: { forwarded_headers: false, forwarded: true, country_header: X-Country }\n",
    );
    assert_exactly(
        &e,
        &[
            "t.yaml:2:58: upstream_options.forwarded: Forwarded is written beside X-Forwarded-For from the same client: it needs forwarded_headers: true",
            "t.yaml:2:80: upstream_options.country_header: needs geo.database or geo.header",
        ],
    );
    let e = errors(
        "upstreams: [\"127.0.0.1:8000\"]\ngeo: { header: CF-IPCountry }\nupstream_options: { country_header: X-Real-IP }\n",
    );
    assert_exactly(
        &e,
        &["t.yaml:3:37: upstream_options.country_header: \"X-Real-IP\" is a header sekisho writes or frames itself"],
    );
    let e = errors(
        "upstreams: [\"127.0.0.1:8000\"]\ngeo: { header: CF-IPCountry }\nupstream_options: { country_header: \"bad header\" }\n",
    );
    assert_exactly(
        &e,
        &["t.yaml:3:37: upstream_options.country_header: \"bad header\" is not a header name"],
    );
}

#[test]
fn defense_sections_parse_with_defaults() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("state")).unwrap();
    let c = parse(
        r#"
upstreams: ["127.0.0.1:8000"]
bans: { state_file: state/bans.json, max_bans: 5000 }
autoban:
  - name: probers
  - name: limit-trippers
    kind: limited
    more_than: 30
    window: 2m
    ban: 15m
    max_ban: 6h
    mode: count
under_attack:
  auto: { refused_per_second: 200, for: 10s }
  rules:
    - name: foreign
      match: { path_prefix: /search }
      action: deny
rules:
  - name: login
    match: { path: /login }
    limit: { rate: 5/min, burst: 10 }
"#,
        &dir.path().join("s.yaml"),
        &SlotRegistry::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let d = &c.defense;
    assert_eq!(d.state_file, Some(dir.path().join("state/bans.json")));
    assert_eq!(d.max_bans, 5000);
    assert_eq!(
        d.max_tracked_offenders,
        crate::defense::DEFAULT_MAX_OFFENDERS
    );
    let p = &d.autoban[0];
    assert_eq!(p.trigger, Trigger::Status(StatusSet::probing()));
    assert_eq!((p.more_than, p.distinct_paths), (20, 10));
    assert_eq!(
        (p.window, p.ban),
        (Duration::from_secs(60), Duration::from_secs(600))
    );
    assert_eq!(p.max_ban, Duration::from_secs(86_400));
    assert_eq!(p.mode, Mode::Enforce);
    let l = &d.autoban[1];
    assert_eq!(l.trigger, Trigger::Limited);
    assert_eq!((l.more_than, l.distinct_paths), (30, 1));
    assert_eq!(l.max_ban, Duration::from_secs(6 * 3600));
    assert_eq!(l.mode, Mode::Count);
    let auto = d.auto.as_ref().unwrap();
    assert_eq!(auto.refused_per_second, Some(200));
    assert_eq!(auto.trip_after, Duration::from_secs(10));
    assert_eq!(auto.quiet, Duration::from_secs(300));
    // the profile follows the normal rules
    assert_eq!(c.policy.profile_from, 1);
    assert_eq!(c.policy.rules[1].name, "foreign");
}

#[test]
fn defense_errors_name_their_field() {
    let errors = errors(
        r#"
upstreams: ["127.0.0.1:8000"]
bans: { max_bans: 0 }
autoban:
  - name: a
    kind: statuz
  - name: a
    statuses: [404, 99]
    distinct_paths: 100
  - name: c
    kind: limited
    distinct_paths: 3
    ban: 1h
    max_ban: 10m
under_attack:
  auto: { for: 10s }
  rules:
    - name: login
      action: deny
rules:
  - name: login
    action: deny
"#,
    );
    assert_exactly(
        &errors,
        &[
            "t.yaml:3:19: bans.max_bans: must be at least 1",
            "t.yaml:6:11: autoban[0].kind: \"statuz\"",
            "t.yaml:7:11: autoban[1].name: duplicate autoban name \"a\" (also autoban[0])",
            "t.yaml:8:21: autoban[1].statuses[1]: 99 is not an HTTP status",
            "t.yaml:9:21: autoban[1].distinct_paths: at most 64",
            "t.yaml:12:21: autoban[2].distinct_paths: only for kind: status",
            "t.yaml:14:14: autoban[2].max_ban: \"10m\" is shorter than ban (1h)",
            "t.yaml:16:9: under_attack.auto: give at least one of",
            "t.yaml:18:13: under_attack.rules[0].name: duplicate rule name \"login\" (also rules[0])",
        ],
    );
}

#[test]
fn access_log_parses_with_defaults_and_names_its_errors() {
    use crate::metrics::access_log::Format;
    use crate::metrics::line_writer::Target;
    let c = parse_str("upstreams: [\"127.0.0.1:8000\"]\naccess_log: { path: \"-\" }\n").unwrap();
    let a = c.access_log.expect("access_log");
    assert_eq!(
        (a.target, a.format, a.queue),
        (Target::Stdout, Format::Combined, 65_536)
    );
    let c = parse_str(
        "upstreams: [\"127.0.0.1:8000\"]\naccess_log: { path: access.log, format: json, queue: 8 }\n",
    )
    .unwrap();
    let a = c.access_log.expect("access_log");
    assert!(matches!(&a.target, Target::File(p) if p.ends_with("access.log")));
    assert_eq!((a.format, a.queue), (Format::Json, 8));
    assert!(parse_str("upstreams: [\"127.0.0.1:8000\"]\n")
        .unwrap()
        .access_log
        .is_none());
    let errors = errors(
        "upstreams: [\"127.0.0.1:8000\"]\naccess_log: { path: a.log, format: clf, queue: 0 }\n",
    );
    assert_exactly(
        &errors,
        &[
            "t.yaml:2:36: access_log.format: \"clf\" is not a format; use combined or json",
            "t.yaml:2:48: access_log.queue: must be at least 1",
        ],
    );
    let unknown = super::tests::errors(
        "upstreams: [\"127.0.0.1:8000\"]\naccess_log: { path: a.log, fmt: json }\n",
    );
    assert!(unknown.iter().any(|e| e.contains("fmt")), "{unknown:?}");
}

/// The warnings of a config that must load.
fn warnings(text: &str) -> Vec<String> {
    let c = parse_str(text).unwrap_or_else(|e| panic!("{e}"));
    c.warnings.iter().map(ToString::to_string).collect()
}

const UP: &str = "upstreams: [\"127.0.0.1:8000\"]\ngeo: { header: CF-IPCountry }\n";

#[test]
fn a_clean_config_has_no_warnings() {
    let w = warnings(&format!(
        "{UP}lists:\n  deny: {{ cidrs: [\"0.0.0.0/1\", \"::/1\"] }}\nrules:\n  - name: probes\n    match: {{ path_prefix: /wp- }}\n    action: deny\n  - name: per-ip\n    limit: {{ rate: 20/s, burst: 100 }}\n  - name: bots\n    match: {{ user_agent: \"(?i)bot\" }}\n    limit: {{ rate: 1/s, burst: 5 }}\n  - name: shadow\n    action: deny\n    mode: count\nunder_attack:\n  auto: {{ refused_per_second: 10 }}\n  rules:\n    - name: foreign\n      match: {{ country_not: [JP] }}\n      limit: {{ rate: 1/s, burst: 10 }}\n"
    ));
    assert_eq!(w, Vec::<String>::new());
}

#[test]
fn a_deny_rule_matching_every_request_warns() {
    let w = warnings(&format!(
        "{UP}rules:\n  - name: all\n    action: deny\n  - name: root\n    match: {{ path_prefix: / }}\n    action: deny\nunder_attack:\n  rules:\n    - name: lockdown\n      action: deny\n"
    ));
    assert_exactly(
        &w,
        &[
            "t.yaml:5:13: rules[0].action: warning: matches every request: every request will be refused",
            "t.yaml:8:13: rules[1].action: warning: matches every request: every request will be refused",
            "t.yaml:12:15: under_attack.rules[0].action: warning: matches every request: while the under-attack profile is on, every request will be refused",
        ],
    );
}

#[test]
fn a_limit_matching_every_request_warns_only_when_it_lumps_or_starves() {
    let w = warnings(&format!(
        "{UP}rules:\n  - name: per-ip\n    limit: {{ rate: 20/s, burst: 100 }}\n  - name: by-country\n    limit: {{ rate: 100/s, burst: 200, key: country }}\n  - name: tiny\n    limit: {{ rate: 1/s, burst: 5 }}\n  - name: tiny-default-burst\n    limit: {{ rate: 2/s }}\n  - name: login\n    match: {{ path: /login }}\n    limit: {{ rate: 1/min, burst: 1 }}\n"
    ));
    assert_exactly(
        &w,
        &[
            "t.yaml:7:44: rules[1].limit.key: warning: matches every request and keys by country:",
            "t.yaml:9:32: rules[2].limit.burst: warning: matches every request with a burst of 5:",
            "t.yaml:11:20: rules[3].limit.rate: warning: matches every request with a burst of 2 (without `burst:`, the rate's count):",
        ],
    );
}

#[test]
fn a_user_agent_regex_matching_the_empty_string_warns() {
    let w = warnings(&format!(
        "{UP}rules:\n  - name: empty-alt\n    match: {{ user_agent: \"msnbot|\" }}\n    limit: {{ rate: 1/s, burst: 5 }}\n  - name: no-ua\n    match: {{ user_agent: \"^$\" }}\n    action: deny\n  - name: fine\n    match: {{ user_agent: \"(?i)bot\" }}\n    action: deny\n"
    ));
    assert_exactly(
        &w,
        &[
            "t.yaml:5:26: rules[0].match.user_agent: warning: \"msnbot|\" matches the empty string: it also matches requests without a User-Agent header, and it matches every user agent",
            "t.yaml:8:26: rules[1].match.user_agent: warning: \"^$\" matches the empty string: it also matches requests without a User-Agent header",
        ],
    );
    assert!(!w[1].contains("every user agent"), "{w:?}");
}

#[test]
fn a_list_entry_covering_a_whole_family_warns_with_its_position() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("deny.txt"),
        "192.0.2.0/24\n# everything:\n  ::/0  # oops\n",
    )
    .unwrap();
    let cfg = dir.path().join("s.yaml");
    let text = "upstreams: [\"127.0.0.1:8000\"]\nlists:\n  allow: { cidrs: [\"10.0.0.0/8\", \"0.0.0.0/0\"] }\n  deny: { files: [deny.txt], cidrs: [\"0.0.0.0/0\"], mode: count }\n";
    let mut cache = ListCache::default();
    for round in 0..2 {
        // the second load takes deny.txt from the cache and still warns of its line
        let c = parse_cached(text, &cfg, &SlotRegistry::default(), &mut cache).unwrap();
        let w: Vec<String> = c.warnings.iter().map(ToString::to_string).collect();
        let want = [
            format!("{}:3:3: lists.deny.files[0]: warning: ::/0 covers every IPv6 address: every IPv6 client would be refused (only counted while lists.deny.mode is count)", dir.path().join("deny.txt").display()),
            format!("{}:3:34: lists.allow.cidrs[1]: warning: 0.0.0.0/0 covers every IPv4 address: every IPv4 client passes without rules, limits or bans", cfg.display()),
            format!("{}:4:38: lists.deny.cidrs[0]: warning: 0.0.0.0/0 covers every IPv4 address: every IPv4 client would be refused", cfg.display()),
        ];
        assert_eq!(w.len(), 3, "round {round}: {w:#?}");
        for want in &want {
            assert!(
                w.iter().any(|l| l.starts_with(want)),
                "round {round}: {want}\nin {w:#?}"
            );
        }
    }
    assert_eq!(cache.files_parsed, 1);
}

#[test]
fn auto_with_a_profile_denying_countries_warns() {
    let profile = "  rules:\n    - name: foreign\n      match: { country_not: [JP, \"??\"] }\n      action: deny\n    - name: kp\n      match: { country: [KP] }\n      action: deny\n      mode: count\n";
    // by hand only: no warning
    assert_eq!(
        warnings(&format!("{UP}under_attack:\n{profile}")),
        Vec::<String>::new()
    );
    let w = warnings(&format!(
        "{UP}under_attack:\n  auto: {{ refused_per_second: 100 }}\n{profile}"
    ));
    assert_exactly(
        &w,
        &["t.yaml:7:30: under_attack.rules[0].match.country_not: warning: under_attack.auto can switch on a profile that refuses whole countries (rule \"foreign\"): it will deny them without a person deciding"],
    );
}

#[test]
fn a_config_with_errors_reports_errors_not_warnings() {
    let e = errors(
        "upstreams: [\"127.0.0.1:8000\"]\nthreads: 0\nrules:\n  - name: all\n    action: deny\n",
    );
    assert!(e.iter().all(|l| !l.contains("warning:")), "{e:?}");
}

#[test]
fn files_run_would_write_are_checked_where_they_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("s.yaml");
    let nowhere = dir.path().join("nowhere");
    let e = parse(
        "upstreams: [\"127.0.0.1:8000\"]\ndecision_log: { path: nowhere/d.log }\nbans: { state_file: nowhere/bans.json }\n",
        &cfg,
        &SlotRegistry::default(),
    )
    .unwrap_err();
    let lines: Vec<String> = e.0.iter().map(ToString::to_string).collect();
    assert_eq!(
        lines,
        [
            format!(
                "{}:2:23: decision_log.path: cannot open {}: the folder {} does not exist",
                cfg.display(),
                nowhere.join("d.log").display(),
                nowhere.display()
            ),
            format!(
                "{}:3:21: bans.state_file: cannot save bans to {}: the folder {} does not exist",
                cfg.display(),
                nowhere.join("bans.json").display(),
                nowhere.display()
            ),
        ]
    );
    // stdout and off need nothing; a folder that exists is enough
    std::fs::create_dir(&nowhere).unwrap();
    for text in [
        "upstreams: [\"127.0.0.1:8000\"]\ndecision_log: { path: \"-\" }\nbans: { state_file: off }\n",
        "upstreams: [\"127.0.0.1:8000\"]\ndecision_log: { path: nowhere/d.log }\nbans: { state_file: nowhere/bans.json }\n",
    ] {
        parse(text, &cfg, &SlotRegistry::default()).unwrap_or_else(|e| panic!("{e}"));
    }
}

#[test]
fn the_country_database_is_compared_with_the_content_it_was_loaded_from() {
    // The watcher starts after the listeners accept: a database swapped in between is found
    // by comparing what the files hold then with these hashes, so the database needs one.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("geo.mmdb");
    let bytes = crate::geo::test_fixture();
    std::fs::write(&db, &bytes).unwrap();
    let config = parse(
        "upstreams: [\"127.0.0.1:8000\"]\ngeo: { database: geo.mmdb }\n",
        &dir.path().join("s.yaml"),
        &SlotRegistry::default(),
    )
    .unwrap();
    assert!(
        config
            .loaded_hashes
            .contains(&(db.clone(), content_hash(&bytes))),
        "{:?}",
        config.loaded_hashes
    );
}

#[test]
fn list_sources_are_kept_when_the_sets_come_from_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("deny.txt"),
        "203.0.113.0/24\n2001:db8::/32\n",
    )
    .unwrap();
    let path = dir.path().join("s.yaml");
    std::fs::write(
        &path,
        "upstreams: [\"127.0.0.1:8000\"]\nbans: { state_file: off }\n\
         client_ip: { trusted_proxies: [\"10.0.0.1\"] }\n\
         lists: { allow: { cidrs: [\"192.0.2.1\"] }, deny: { files: [deny.txt], mode: count } }\n",
    )
    .unwrap();
    let slots = SlotRegistry::default();
    let mut cache = ListCache::default();
    let first = load_cached(&path, &slots, &mut cache).unwrap();
    let again = load_cached(&path, &slots, &mut cache).unwrap();
    let want = ListSources {
        allow: ListSource {
            cidrs: vec!["192.0.2.1/32".parse().unwrap()],
            files: vec![],
        },
        deny: ListSource {
            cidrs: vec![],
            files: vec![ListFile {
                path: dir.path().join("deny.txt"),
                entries: 2,
            }],
        },
    };
    assert_eq!(first.list_sources, want);
    assert_eq!(again.list_sources, want);
    assert_eq!(
        first.client_ip.trusted,
        vec!["10.0.0.1/32".parse().unwrap()]
    );
    let text = first.effective().unwrap();
    assert_eq!(again.effective().unwrap(), text);
    assert!(text.contains(" # 2 entries\n    mode: count\n"), "{text}");
    assert!(text.contains("\n  state_file: \"off\"\n"), "{text}");
}

#[test]
fn connections_parse_with_defaults_and_name_their_errors() {
    let c = parse_str("upstreams: [\"127.0.0.1:8000\"]\n").unwrap();
    assert_eq!(c.connections, ConnectionSettings::default());
    assert_eq!(
        (
            c.connections.header_timeout,
            c.connections.idle_timeout,
            c.connections.max_requests_per_connection
        ),
        (Duration::from_secs(10), Duration::from_secs(60), 10_000)
    );
    let c = parse_str(
        "upstreams: [\"127.0.0.1:8000\"]\nconnections: { header_timeout: 3s, idle_timeout: 5m, max_requests_per_connection: 1 }\n",
    )
    .unwrap();
    assert_eq!(
        (
            c.connections.header_timeout,
            c.connections.idle_timeout,
            c.connections.max_requests_per_connection
        ),
        (Duration::from_secs(3), Duration::from_secs(300), 1)
    );
    let errors = errors(
        "upstreams: [\"127.0.0.1:8000\"]\nconnections: { header_timeout: 0s, idle_timeout: 2d, max_requests_per_connection: 0 }\n",
    );
    assert_eq!(errors.len(), 3, "{errors:?}");
    for (want, e) in [
        "t.yaml:2:32: connections.header_timeout: ",
        "t.yaml:2:50: connections.idle_timeout: ",
        "t.yaml:2:83: connections.max_requests_per_connection: must be at least 1",
    ]
    .iter()
    .zip(&errors)
    {
        assert!(e.starts_with(want), "{e:?} does not start with {want:?}");
    }
}

#[test]
fn body_limits_parse_with_defaults_and_name_their_errors() {
    use crate::conn::body::BodyLimits;
    use std::num::NonZeroU64;
    let c = parse_str("upstreams: [\"127.0.0.1:8000\"]\n").unwrap();
    assert_eq!(
        c.connections.body,
        BodyLimits {
            stall: Duration::from_secs(30),
            min_rate: NonZeroU64::new(1024),
            grace: Duration::from_secs(10),
        }
    );
    let c = parse_str(
        "upstreams: [\"127.0.0.1:8000\"]\nconnections: { body_timeout: 5s, body_min_rate: 2MiB/s, body_rate_grace: 1m }\n",
    )
    .unwrap();
    assert_eq!(
        c.connections.body,
        BodyLimits {
            stall: Duration::from_secs(5),
            min_rate: NonZeroU64::new(2 << 20),
            grace: Duration::from_secs(60),
        }
    );
    let text = c.effective().unwrap();
    assert!(
        text.contains("  body_timeout: 5s\n  body_min_rate: 2MiB/s\n  body_rate_grace: 1m\n"),
        "{text}"
    );
    let c = parse_str("upstreams: [\"127.0.0.1:8000\"]\nconnections: { body_min_rate: off }\n")
        .unwrap();
    assert_eq!(c.connections.body.min_rate, None);
    assert!(c
        .effective()
        .unwrap()
        .contains("  body_min_rate: \"off\"\n"));
    let bad = errors(
        "upstreams: [\"127.0.0.1:8000\"]\nconnections: { body_timeout: 0s, body_min_rate: 1KB/s, body_rate_grace: 2h }\n",
    );
    assert_exactly(
        &bad,
        &[
            "t.yaml:2:30: connections.body_timeout: \"0s\" is out of range (1s to 1h)",
            "t.yaml:2:49: connections.body_min_rate: \"1KB/s\" is not a byte rate (e.g. 512B/s, 1KiB/s, 2MiB/s, or off)",
            "t.yaml:2:73: connections.body_rate_grace: \"2h\" is out of range (1s to 1h)",
        ],
    );
    let zero = errors("upstreams: [\"127.0.0.1:8000\"]\nconnections: { body_min_rate: 0B/s }\n");
    assert_exactly(
        &zero,
        &["t.yaml:2:31: connections.body_min_rate: \"0B/s\" is out of range (1B/s to 1024MiB/s)"],
    );
}

#[test]
fn per_client_connection_rates_parse_and_name_their_errors() {
    let c = parse_str("upstreams: [\"127.0.0.1:8000\"]\n").unwrap();
    let q = c.connections.per_client_rate.expect("on by default");
    assert_eq!((q.rate(), q.burst().get()), ("50/s".to_string(), 200));
    assert_eq!(c.connections.mode, Mode::Enforce);
    let c = parse_str(
        "upstreams: [\"127.0.0.1:8000\"]\nconnections: { per_client: { rate: 10/min, burst: 5 }, mode: count }\n",
    )
    .unwrap();
    let q = c.connections.per_client_rate.expect("set");
    assert_eq!((q.rate(), q.burst().get()), ("10/min".to_string(), 5));
    assert_eq!(c.connections.mode, Mode::Count);
    let c =
        parse_str("upstreams: [\"127.0.0.1:8000\"]\nconnections: { per_client: { rate: off } }\n")
            .unwrap();
    assert!(c.connections.per_client_rate.is_none());
    let bad = errors(
        "upstreams: [\"127.0.0.1:8000\"]\nconnections: { per_client: { rate: lots, burst: 0 } }\n",
    );
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert!(
        bad[0].starts_with("t.yaml:2:36: connections.per_client.rate: "),
        "{bad:?}"
    );
    let errors = errors(
        "upstreams: [\"127.0.0.1:8000\"]\nconnections: { per_client: { rate: 5/s, burst: 0 } }\n",
    );
    assert!(
        errors[0].starts_with("t.yaml:2:48: connections.per_client.burst: must be at least 1"),
        "{errors:?}"
    );
}

#[test]
fn a_log_folder_that_went_away_fails_a_start_but_only_warns_on_a_reload() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.yaml");
    std::fs::write(
        &path,
        "upstreams: [\"127.0.0.1:8000\"]\ndecision_log: { path: gone/d.log }\naccess_log: { path: gone/a.log }\n",
    )
    .unwrap();
    let slots = SlotRegistry::default();
    let mut cache = ListCache::default();
    let e = load_cached(&path, &slots, &mut cache).unwrap_err();
    assert_eq!(e.0.len(), 2, "{e}");
    cache.set_running();
    let c = load_cached(&path, &slots, &mut cache).expect("a reload keeps the open logs");
    let w: Vec<String> = c.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(
        w.iter().all(|w| w.contains("gone does not exist (the running proxy keeps the file it opened; a restart would fail)")),
        "{w:?}"
    );
}

#[test]
fn connection_caps_parse_and_name_their_errors() {
    let c = parse_str("upstreams: [\"127.0.0.1:8000\"]\n").unwrap();
    assert_eq!(
        (c.connections.max_open, c.connections.per_client_max_open),
        (50_000, Some(256))
    );
    let c = parse_str(
        "upstreams: [\"127.0.0.1:8000\"]\nconnections: { max_open: 100, per_client: { max_open: 8 } }\n",
    )
    .unwrap();
    assert_eq!(
        (c.connections.max_open, c.connections.per_client_max_open),
        (100, Some(8))
    );
    // a per_client without rate keeps the default rate
    assert!(c.connections.per_client_rate.is_some());
    let c = parse_str(
        "upstreams: [\"127.0.0.1:8000\"]\nconnections: { per_client: { max_open: off, rate: off } }\n",
    )
    .unwrap();
    assert_eq!(
        (
            c.connections.per_client_max_open,
            c.connections.per_client_rate.is_none()
        ),
        (None, true)
    );
    let errors = errors(
        "upstreams: [\"127.0.0.1:8000\"]\nconnections: { max_open: 0, per_client: { max_open: many, burst: 3 } }\n",
    );
    assert_eq!(errors.len(), 3, "{errors:?}");
    for (want, e) in [
        "t.yaml:2:26: connections.max_open: must be from 1",
        "t.yaml:2:53: connections.per_client.max_open: \"many\": a count",
        "t.yaml:2:66: connections.per_client.burst: needs a rate beside it",
    ]
    .iter()
    .zip(&errors)
    {
        assert!(e.starts_with(want), "{e:?} does not start with {want:?}");
    }
}
