//! `sekisho explain` through the real binary: offline on a config file (the failing condition of
//! each rule, the limit key, the decision), and with `--admin` against a live proxy, whose
//! buckets and bans it reads without changing them: what it says is what the next request gets.

mod support;

use std::process::Output;

use support::{get_from, Conn, Origin, Proxy};

fn sekisho(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_sekisho"))
        .args(args)
        .env_remove("SEKISHO_LOG")
        .output()
        .expect("run sekisho")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs and asserts success; the standard output.
fn ok(args: &[&str]) -> String {
    let o = sekisho(args);
    assert!(
        o.status.success(),
        "sekisho {args:?}: {:?}\n{}{}",
        o.status,
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

fn json(args: &[&str]) -> serde_json::Value {
    let text = ok(args);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text} is not JSON: {e}"))
}

/// The step of the rule `name`.
fn rule<'v>(v: &'v serde_json::Value, name: &str) -> &'v serde_json::Value {
    v["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("no step for rule {name} in {v:#}"))
}

const RULES: &str = r#"upstreams: ["127.0.0.1:8000"]
client_ip: { trusted_proxies: ["10.0.0.0/8"] }
geo: { header: CF-IPCountry }
lists:
  deny: { cidrs: ["198.51.100.0/24"] }
rules:
  - name: login
    match: { path_prefix: /login, methods: [POST] }
    limit: { rate: 5/min, burst: 10, key: ip }
    response: { status: 429, retry_after: true }
  - name: foreign
    match: { country: [CN, RU] }
    action: deny
  - name: api
    match: { path_prefix: /api }
    limit: { rate: 10/min, burst: 5, key: "header:x-api-key" }
"#;

#[test]
fn offline_names_the_failing_condition_the_key_and_the_decision() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("sekisho.yaml");
    std::fs::write(&config, RULES).expect("write config");
    let c = config.to_str().expect("a UTF-8 path");

    let text = ok(&[
        "explain",
        "-c",
        c,
        "--country",
        "JP",
        "-H",
        "X-Api-Key: k1",
        "GET",
        "https://shop.example/api/x?y=1",
    ]);
    for want in [
        "request: GET https://shop.example/api/x?y=1  (path /api/x, host shop.example,",
        "client:  192.0.2.1 (the socket peer), country JP (--country)",
        "  bans                 ? known only to the running proxy (--admin)\n",
        "  rule login           ✗ methods [POST] does not include GET\n",
        "  rule foreign         ✗ country not in [CN, RU] (client is JP)\n",
        "  rule api             ✓ matched: limit 10/min burst 5, key header:x-api-key=k1; 5 of 5 tokens left → passes\n",
        "decision: allow\n",
    ] {
        assert!(text.contains(want), "{want:?} not in\n{text}");
    }

    // the client behind a trusted proxy, its country from the trusted header: denied
    let v = json(&[
        "explain",
        "-c",
        c,
        "--json",
        "--ip",
        "10.0.0.1",
        "-H",
        "X-Forwarded-For: 203.0.113.9",
        "-H",
        "CF-IPCountry: cn",
        "POST",
        "/login",
    ]);
    assert_eq!(v["client"]["ip"], "203.0.113.9");
    assert_eq!(v["client"]["country"], "CN");
    assert_eq!(rule(&v, "login")["limit"]["key"], "ip 203.0.113.9");
    assert_eq!(rule(&v, "foreign")["matched"], true);
    assert_eq!(
        rule(&v, "api")["why"],
        "path_prefix /api does not match /login"
    );
    assert_eq!(rule(&v, "api")["reached"], false);
    assert_eq!(v["decision"]["text"], "deny by foreign (403)");
    assert_eq!(v["agrees"], true);

    // the deny list
    let v = json(&[
        "explain",
        "-c",
        c,
        "--json",
        "--ip",
        "198.51.100.7",
        "GET",
        "/",
    ]);
    assert_eq!(v["steps"][2]["matched"], true);
    assert_eq!(v["decision"]["text"], "deny by deny-list (403)");

    // what is wrong is named
    let bad = sekisho(&["explain", "-c", c, "GET", "login"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        stderr(&bad).contains("URL \"login\": give a path (/login?x=1) or an absolute"),
        "{}",
        stderr(&bad)
    );
    let bad = sekisho(&["explain", "-c", c, "-H", "X-Api-Key k1", "GET", "/"]);
    assert!(
        stderr(&bad).contains("header \"X-Api-Key k1\": write it as 'Name: value'"),
        "{}",
        stderr(&bad)
    );
    std::fs::write(&config, "rules: [nonsense]\n").expect("write config");
    let bad = sekisho(&["explain", "-c", c, "GET", "/"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(stderr(&bad).contains("sekisho.yaml:1:"), "{}", stderr(&bad));
}

#[test]
fn live_explain_reads_tokens_and_bans_and_the_next_requests_agree() {
    let origin = Origin::start();
    let proxy = Proxy::start(&format!(
        "{}rules:\n  - name: slow\n    match: {{ path_prefix: /p }}\n    limit: {{ rate: 1/min, burst: 3, key: ip }}\n    response: {{ status: 429, retry_after: true }}\n",
        origin.upstreams()
    ));
    let admin = proxy.admin_addr().to_string();
    let explain = |ip: &str| {
        json(&[
            "explain", "--admin", &admin, "--json", "--ip", ip, "GET", "/p/x",
        ])
    };
    for _ in 0..2 {
        assert_eq!(
            get_from(Some("127.0.0.2"), proxy.addr(), "/p/x").status,
            200
        );
    }
    let v = explain("127.0.0.2");
    assert_eq!(v["live"], true);
    let slow = rule(&v, "slow");
    assert_eq!(slow["limit"]["key"], "ip 127.0.0.2");
    assert_eq!(slow["limit"]["tokens_left"], 1);
    assert_eq!(slow["limit"]["tracked"], true);
    assert_eq!(v["decision"]["text"], "allow");
    // explaining took nothing: still one token, and the next request has it
    assert_eq!(
        rule(&explain("127.0.0.2"), "slow")["limit"]["tokens_left"],
        1
    );
    assert_eq!(
        get_from(Some("127.0.0.2"), proxy.addr(), "/p/x").status,
        200
    );

    let v = explain("127.0.0.2");
    assert_eq!(rule(&v, "slow")["limit"]["tokens_left"], 0);
    assert_eq!(v["decision"]["action"], "limit");
    assert_eq!(v["decision"]["status"], 429);
    let retry = v["decision"]["retry_after_s"]
        .as_u64()
        .expect("retry after");
    assert!((1..=60).contains(&retry), "{v:#}");
    assert_eq!(
        v["engine_decision"]["text"], "allow",
        "full buckets pass it"
    );
    let refused = get_from(Some("127.0.0.2"), proxy.addr(), "/p/x");
    assert_eq!(refused.status, 429);
    // another client has its own full bucket
    assert_eq!(
        rule(&explain("127.0.0.4"), "slow")["limit"]["tokens_left"],
        3
    );

    // the text names the live state and the decision
    let text = ok(&[
        "explain",
        "--admin",
        &admin,
        "--ip",
        "127.0.0.2",
        "GET",
        "/p/x",
    ]);
    assert!(text.contains("against: the running proxy ("), "{text}");
    assert!(
        text.contains("key ip 127.0.0.2; 0 of 3 tokens left, the next in "),
        "{text}"
    );
    assert!(
        text.contains("decision: limit by slow (retry after "),
        "{text}"
    );

    // a banned client: its ban and what is left of it
    let ban = Conn::open(None, proxy.admin_addr())
        .and_then(|mut c| c.request("POST", "/admin/bans?net=127.0.0.3&ttl=1h", &[], b""))
        .expect("POST /admin/bans");
    assert_eq!(ban.status, 200, "{}", ban.text());
    let v = explain("127.0.0.3");
    let bans = &v["steps"][1];
    assert_eq!(bans["check"], "bans");
    assert_eq!(bans["matched"], true);
    assert_eq!(bans["mode"], "enforce");
    assert_eq!(bans["net"], "127.0.0.3/32");
    let left = bans["remaining_s"].as_u64().expect("remaining");
    assert!((1..=3600).contains(&left), "{v:#}");
    assert_eq!(v["decision"]["text"], "deny by ban (403)");
    assert_eq!(
        get_from(Some("127.0.0.3"), proxy.addr(), "/p/x").status,
        403
    );
    let text = ok(&[
        "explain",
        "--admin",
        &admin,
        "--ip",
        "127.0.0.3",
        "GET",
        "/",
    ]);
    assert!(text.contains("✓ banned 127.0.0.3/32 (enforce), "), "{text}");

    // a bad request is the admin listener's 400, named
    let bad = sekisho(&["explain", "--admin", &admin, "GET", "nope"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        stderr(&bad).contains(": 400: URL \"nope\": give a path"),
        "{}",
        stderr(&bad)
    );
}
