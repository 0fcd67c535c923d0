//! The operator commands against a running proxy, through the real binary: `status`, `top`,
//! `bans add|list|remove`, as tables for people and `--json` for scripts.

mod support;

use std::process::Output;

use support::{get_from, Origin, Proxy};

/// `sekisho ARGS...`, with the proxy's config given by `-c` (so the admin address comes from
/// it) unless ARGS name `--admin`.
fn sekisho(proxy: &Proxy, args: &[&str]) -> Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_sekisho"));
    cmd.args(args).env_remove("SEKISHO_LOG");
    if !args.contains(&"--admin") {
        cmd.arg("-c").arg(&proxy.config);
    }
    cmd.output().expect("run sekisho")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs and asserts success; the standard output.
fn ok(proxy: &Proxy, args: &[&str]) -> String {
    let o = sekisho(proxy, args);
    assert!(
        o.status.success(),
        "sekisho {args:?}: {:?}\n{}",
        o.status,
        stderr(&o)
    );
    stdout(&o)
}

#[test]
fn status_shows_listeners_peers_and_rules_and_json_is_the_admin_answer() {
    let origin = Origin::start();
    let proxy = Proxy::start(&format!(
        "{}rules:\n  - name: wp-probes\n    match: {{ path_prefix: /wp- }}\n    action: deny\n",
        origin.upstreams()
    ));
    assert_eq!(get_from(None, proxy.addr(), "/wp-login.php").status, 403);
    let text = ok(&proxy, &["status"]);
    for want in [
        format!("sekisho      {}, up ", env!("CARGO_PKG_VERSION")),
        format!(
            "listeners    127.0.0.1:{} (listen[0]) serving\n",
            proxy.port
        ),
        format!("             [::1]:{} (listen[1]) serving\n", proxy.port),
        format!(
            "             127.0.0.1:{} (admin.listen) serving\n",
            proxy.admin_port
        ),
        format!("upstreams    {} up\n", origin.addr),
        "under attack off since ".to_string(),
        "RULE       MODE     COUNT  WHAT\n".to_string(),
        "wp-probes  enforce      1  refused\n".to_string(),
    ] {
        assert!(text.contains(&want), "missing {want:?} in:\n{text}");
    }
    let admin = proxy.admin_addr().to_string();
    let json: serde_json::Value =
        serde_json::from_str(&ok(&proxy, &["status", "--json", "--admin", &admin]))
            .expect("status --json is JSON");
    assert_eq!(json["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(json["rule_stats"][0]["refused"], 1);
}

#[test]
fn top_ranks_paths_and_clients() {
    let origin = Origin::start();
    let proxy = Proxy::start(&origin.upstreams());
    for _ in 0..3 {
        get_from(Some("127.0.0.3"), proxy.addr(), "/busy");
    }
    get_from(Some("127.0.0.4"), proxy.addr(), "/quiet");
    let text = ok(&proxy, &["top", "--by", "path", "-n", "5"]);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("top 2 by path over the last 5 minutes"),
        "{text}"
    );
    assert!(lines[1].starts_with("PATH "), "{text}");
    let cells = |l: &str| l.split_whitespace().map(str::to_string).collect::<Vec<_>>();
    assert_eq!(cells(lines[2]), ["/busy", "3", "3", "0", "0"], "{text}");
    assert_eq!(cells(lines[3]), ["/quiet", "1", "1", "0", "0"], "{text}");
    let json: serde_json::Value =
        serde_json::from_str(&ok(&proxy, &["top", "--json", "--by", "ip"])).expect("JSON");
    assert_eq!(json["by"], "ip");
    assert_eq!(json["top"][0]["key"], "127.0.0.3");
    // a bad choice is refused by the command line, before asking anyone
    let o = sekisho(&proxy, &["top", "--by", "referer"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

#[test]
fn bans_added_listed_and_removed_by_hand() {
    let origin = Origin::start();
    let proxy = Proxy::start(&origin.upstreams());
    let added = ok(
        &proxy,
        &[
            "bans",
            "add",
            "127.0.0.9",
            "--ttl",
            "30m",
            "--reason",
            "a scraper & friends",
        ],
    );
    assert!(
        added.starts_with("banned: 127.0.0.9/32 until ") && added.contains("(in 30m)"),
        "{added}"
    );
    assert!(added.ends_with("(a scraper & friends)\n"), "{added}");
    assert_eq!(get_from(Some("127.0.0.9"), proxy.addr(), "/").status, 403);

    let table = ok(
        &proxy,
        &["bans", "list", "--admin", &proxy.admin_addr().to_string()],
    );
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("NET  "), "{table}");
    assert!(
        lines[1].starts_with("127.0.0.9/32  enforce  manual  ")
            && lines[1].contains(" (in 30m)  ")
            && lines[1].ends_with("1  a scraper & friends"),
        "{table}"
    );
    // the state file says the same, as JSON for scripts
    let json: serde_json::Value =
        serde_json::from_str(&ok(&proxy, &["bans", "list", "--json"])).expect("JSON");
    assert_eq!(json[0]["net"], "127.0.0.9/32");
    assert_eq!(json[0]["reason"], "a scraper & friends");

    // too wide without --force
    let o = sekisho(&proxy, &["bans", "add", "10.0.0.0/4"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("force"), "{}", stderr(&o));

    assert_eq!(
        ok(&proxy, &["bans", "remove", "127.0.0.9"]),
        "unbanned: 127.0.0.9/32\n"
    );
    assert_eq!(get_from(Some("127.0.0.9"), proxy.addr(), "/").status, 200);
    let o = sekisho(&proxy, &["bans", "remove", "127.0.0.9"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).starts_with("127.0.0.9/32: not banned"),
        "{}",
        stderr(&o)
    );
    assert_eq!(ok(&proxy, &["bans", "list"]), "no live bans\n");
}

#[test]
fn a_proxy_that_is_not_running_is_named() {
    let port = support::free_port("127.0.0.1");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_sekisho"))
        .args(["status", "--admin", &format!("127.0.0.1:{port}")])
        .output()
        .expect("run sekisho");
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).starts_with(&format!(
            "cannot reach the admin listener at 127.0.0.1:{port}: "
        )),
        "{}",
        stderr(&o)
    );
}
