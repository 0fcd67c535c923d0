//! The admin HTTP listener (loopback by default): health, readiness, status and admin actions.
//!
//! `GET /healthz` (the process answers), `GET /readyz` (every configured listener serves, a
//! config is loaded and an upstream is not marked down; see [`ready`]), `GET /admin/status` (JSON: generation, reloads, limiter, decisions),
//! `POST /admin/reload` (reload now; answers with the new generation or the errors),
//! `GET /admin/explain?method=&url=&ip=&header=&country=&ja4=` (how that request is judged
//! now, with the live state of its buckets and ban; see [`explain`]).
//! Prometheus metrics join this listener in their own issue. No request path logic lives here.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

pub mod client;
pub mod explain;
pub mod ready;

use async_trait::async_trait;
use http::{Response, StatusCode};
use ipnet::IpNet;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use crate::config::parse_duration;
use crate::defense::export::ExportOptions;
use crate::defense::store::{self, Clocks};
use crate::defense::{export_records, Added, ManualBan, Setting};
use crate::iplist::parse_net;
use crate::limiter::Clock;
use crate::metrics::top::{Dimension, MINUTES};
use crate::proxy::unix_now;
use crate::proxy::State;
use crate::reload::Trigger;
use crate::reload::{announce_switch, would_refuse};
use ready::Listeners;

/// The admin app.
pub struct Admin {
    state: Arc<State>,
    reload: mpsc::Sender<Trigger>,
    listeners: Arc<Listeners>,
}

impl Admin {
    /// An admin app over `state`, sending reload requests to `reload`; `/readyz` also waits
    /// for every one of `listeners` to serve.
    pub fn new(
        state: Arc<State>,
        reload: mpsc::Sender<Trigger>,
        listeners: Arc<Listeners>,
    ) -> Self {
        Self {
            state,
            reload,
            listeners,
        }
    }

    fn status(&self) -> serde_json::Value {
        let s = &self.state;
        let snap = s.snapshot.load();
        let r = &s.reloads;
        let policy = &snap.config.policy;
        // A profile rule (`under_attack.rules`) is enforced only while the switch is on; while
        // it is off the rule is previewed: it is shown as `shadow`, with what it would have
        // refused (`sekisho_under_attack_would_refuse_total`).
        let attack_on = s.defense.attack.is_on();
        let rules: Vec<serde_json::Value> = policy
            .rules
            .iter()
            .zip(&snap.series.rules)
            .enumerate()
            .map(|(i, (r, hits))| {
                let profile = i >= policy.profile_from;
                let preview = profile
                    .then(|| snap.series.would_refuse.get(i - policy.profile_from))
                    .flatten();
                let (mode, key, n) = match (r.mode, profile && !attack_on, preview) {
                    (crate::engine::Mode::Count, _, _) => ("count", "would_refuse", hits.get()),
                    (_, true, Some(p)) => ("shadow", "would_refuse", p.get()),
                    _ => ("enforce", "refused", hits.get()),
                };
                let mut v = json!({ "name": r.name, "mode": mode, key: n });
                if profile {
                    v["under_attack"] = json!(true);
                }
                v
            })
            .collect();
        let deny_key = match policy.deny_mode {
            crate::engine::Mode::Enforce => "refused",
            crate::engine::Mode::Count => "would_refuse",
        };
        // decisions by action, from the same counters /metrics exports
        let mut decisions = serde_json::Map::new();
        for family in prometheus::core::Collector::collect(&s.metrics.requests) {
            for m in family.get_metric() {
                let decision = m
                    .get_label()
                    .iter()
                    .find(|l| l.name() == "decision")
                    .map(|l| l.value().to_string())
                    .unwrap_or_default();
                let n = m.get_counter().get_value() as u64;
                let e = decisions.entry(decision).or_insert(json!(0));
                *e = json!(e.as_u64().unwrap_or(0) + n);
            }
        }
        let now = s.clock.now();
        let upstreams: Vec<serde_json::Value> = snap
            .config
            .upstreams
            .iter()
            .enumerate()
            .map(|(i, u)| {
                let down = snap.upstreams.down_for(i, now);
                json!({
                    "name": u.name,
                    "addr": u.addr.to_string(),
                    "up": down.is_none(),
                    "skipped_for_s": down.map(|d| d.as_secs_f64().ceil() as u64),
                })
            })
            .collect();
        let listeners: Vec<serde_json::Value> = self
            .listeners
            .all()
            .map(|(l, serving)| {
                json!({ "field": l.field, "addr": l.addr.to_string(), "serving": serving })
            })
            .collect();
        let wall = unix_now();
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            // which process answers, during a binary upgrade
            "pid": std::process::id(),
            "started_unix": s.started_unix,
            "cluster": s.cluster.as_ref().map(|c| c.status()),
            "uptime_s": wall.saturating_sub(s.started_unix),
            "listeners": listeners,
            "upstreams": upstreams,
            "connections": {
                "open": s.connections.open(),
                "idle": s.connections.idle(),
                "clients": s.connections.clients(),
                // connections.max_open as the descriptor limit lets it be
                "max_open": s.connections.max_open(snap.config.connections.max_open),
                "per_client_max_open": snap.config.connections.per_client_max_open,
            },
            "config": snap.config.path.display().to_string(),
            "generation": snap.generation,
            "rules": policy.rules.len(),
            "rule_stats": rules,
            "geo": snap.config.geo.database.as_ref().map(|db| json!({
                "database_type": db.database_type(),
                "build_epoch": db.build_epoch(),
            })),
            "deny_list": { deny_key: snap.series.deny_list.get() },
            "allow_entries": policy.allow.entries(),
            "deny_entries": policy.deny.entries(),
            "reloads": {
                "ok": s.metrics.reloads.with_label_values(&["ok"]).get(),
                "failed": s.metrics.reloads.with_label_values(&["error"]).get(),
                "last_ok_unix": s.metrics.last_reload_success.get(),
                "last_duration_ms": r.last_duration_ms.load(Ordering::Relaxed),
                "last_error": *r.last_error.lock(),
            },
            "limiter": {
                "tracked_keys": s.limiter.len(),
                "capacity": s.limiter.capacity(),
                "evictions": s.limiter.evictions(),
            },
            "decisions": decisions,
            "defense": {
                "bans_live": s.defense.bans.live(s.clock.now()),
                "autoban_policies": snap.config.defense.autoban.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
                "tracked_offenders": s.defense.offenders.len(),
                "state_file": s.defense.state_file.as_ref().map(|p| p.display().to_string()),
                "state_error": s.defense.state_error.lock().as_ref().map(ToString::to_string),
                "under_attack": s.defense.attack.describe(),
            },
        })
    }

    /// `GET /admin/top?by=ip|country|user_agent|path|ja4&window=5m&n=20`.
    fn top(&self, query: &str) -> Result<serde_json::Value, String> {
        let params = parse_query(query, &["by", "window", "n"])?;
        let by = params.get("by").map_or("ip", String::as_str);
        let window = match params.get("window") {
            None => 5,
            Some(v) => v
                .strip_suffix('m')
                .unwrap_or(v)
                .parse()
                .ok()
                .filter(|w| (1..=MINUTES as u64).contains(w))
                .ok_or_else(|| format!("window {v:?}: use 1m to {MINUTES}m"))?,
        };
        let n = match params.get("n") {
            None => 20,
            Some(v) => v
                .parse()
                .ok()
                .filter(|n| (1..=1000).contains(n))
                .ok_or_else(|| format!("n {v:?}: use 1 to 1000"))?,
        };
        let dim = Dimension::parse(by)
            .ok_or_else(|| format!("by {by:?}: use ip, country, user_agent, path or ja4"))?;
        let minute = self.state.clock.now() / 60_000_000_000;
        let v6 = self.state.snapshot.load().config.client_ip.ipv6_prefix;
        Ok(json!({
            "by": by,
            "window_minutes": window,
            "approximate": true,
            "note": "heavy hitters from bounded per-minute sketches: counts are upper bounds, each within its `error`; updates skipped under contention are in `skipped`",
            "skipped": self.state.top.skipped.load(Ordering::Relaxed),
            "top": self.state.top.top(dim, window, minute, n, v6),
        }))
    }

    /// `GET /metrics`: brings the scrape-time values up to date, then renders.
    fn metrics(&self) -> Vec<u8> {
        let s = &self.state;
        let m = &s.metrics;
        m.tracked_keys.set(s.limiter.len() as i64);
        m.connections_open.set(s.connections.open() as i64);
        let failed = crate::metrics::ACCEPT_ERRORS.load(Ordering::Relaxed);
        if failed > m.accept_errors.get() {
            m.accept_errors.inc_by(failed - m.accept_errors.get());
        }
        m.connections_idle.set(s.connections.idle() as i64);
        m.connections_clients.set(s.connections.clients() as i64);
        let evicted = s.limiter.evictions();
        let shown = m.evictions.get();
        if evicted > shown {
            m.evictions.inc_by(evicted - shown);
        }
        let d = &s.defense;
        m.bans_active.set(d.bans.live(s.clock.now()) as i64);
        m.offenders_tracked.set(d.offenders.len() as i64);
        let evicted = d.offenders.evictions();
        let shown = m.offender_evictions.get();
        if evicted > shown {
            m.offender_evictions.inc_by(evicted - shown);
        }
        m.under_attack.set(i64::from(d.attack.is_on()));
        m.render()
    }

    fn clocks(&self) -> Clocks {
        Clocks {
            mono: self.state.clock.now(),
            unix: unix_now(),
        }
    }

    /// `GET /admin/bans`.
    fn bans(&self) -> serde_json::Value {
        let d = &self.state.defense;
        let clocks = self.clocks();
        let records = d.records(&clocks);
        json!({
            "now": clocks.unix,
            "live": records.len(),
            "max_bans": d.bans.max(),
            "state_file": d.state_file.as_ref().map(|p| p.display().to_string()),
            "state_error": d.state_error.lock().as_ref().map(ToString::to_string),
            "tracked_offenders": d.offenders.len(),
            "bans": records,
        })
    }

    /// `POST /admin/bans?net=ADDR|CIDR&ttl=1h&reason=...&force=true` and
    /// `DELETE /admin/bans?net=...`. A ban wider than [`too_wide`] allows needs `force=true`.
    async fn ban_by_hand(
        &self,
        query: &str,
        who: &str,
        add: bool,
    ) -> (StatusCode, serde_json::Value) {
        let params = match parse_query(query, &["net", "ip", "ttl", "reason", "force"]) {
            Ok(p) => p,
            Err(e) => return (StatusCode::BAD_REQUEST, json!({ "error": e })),
        };
        let Some(net) = params.get("net").or(params.get("ip")) else {
            return (
                StatusCode::BAD_REQUEST,
                json!({ "error": "give net=ADDRESS or net=CIDR (e.g. net=203.0.113.7 or net=198.51.100.0/24)" }),
            );
        };
        let net = match parse_net(net) {
            Ok(n) => crate::defense::bans::canonical_net(n),
            Err(e) => {
                return (
                    StatusCode::BAD_REQUEST,
                    json!({ "error": format!("net: {e}") }),
                )
            }
        };
        let snap = self.state.snapshot.load();
        let d = &self.state.defense;
        let now = self.state.clock.now();
        if !add {
            let removed = d.bans.remove(net);
            tracing::warn!(target: "sekisho::audit", by = who, %net, removed, "ban lifted by hand");
            // the fleet lifts it too, even where only another instance holds it
            let fleet = self.state.cluster.as_ref().inspect(|c| {
                c.publish(crate::cluster::Event::Unban(net.to_string()));
            });
            if fleet.is_some() && !removed {
                return (
                    StatusCode::OK,
                    json!({ "result": "unbanned in the fleet (not banned here)", "net": net.to_string() }),
                );
            }
            let save_error = self.persist().await;
            return if removed {
                (
                    StatusCode::OK,
                    json!({ "result": "unbanned", "net": net.to_string(), "save_error": save_error }),
                )
            } else {
                (
                    StatusCode::NOT_FOUND,
                    json!({ "result": "not banned", "net": net.to_string() }),
                )
            };
        }
        let force = match params.get("force").map(String::as_str) {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return (
                    StatusCode::BAD_REQUEST,
                    json!({ "error": format!("force: {other:?}: use true or false") }),
                )
            }
        };
        if let Some(why) = too_wide(net).filter(|_| !force) {
            return (
                StatusCode::BAD_REQUEST,
                json!({ "error": format!("{why}: add force=true to ban it anyway") }),
            );
        }
        let ttl = match params.get("ttl").map(|t| parse_duration(t)) {
            None => Duration::from_secs(3600),
            Some(Ok(t)) if !t.is_zero() && t <= Duration::from_secs(365 * 86_400) => t,
            Some(Ok(_)) => {
                return (
                    StatusCode::BAD_REQUEST,
                    json!({ "error": "ttl: from 1s to 365d" }),
                )
            }
            Some(Err(e)) => {
                return (
                    StatusCode::BAD_REQUEST,
                    json!({ "error": format!("ttl: {e}") }),
                )
            }
        };
        let reason = params
            .get("reason")
            .cloned()
            .unwrap_or_else(|| format!("by hand from {who}"));
        let ban = ManualBan { net, ttl, reason };
        let (added, b) = d.ban_by_hand(&ban, now, unix_now());
        let clocks = self.clocks();
        let allow_listed = snap.config.policy.allow.contains(net.network());
        tracing::warn!(
            target: "sekisho::audit",
            by = who,
            %net,
            seconds = ttl.as_secs(),
            reason = %ban.reason,
            result = ?added,
            allow_listed,
            "ban added by hand"
        );
        match added {
            Added::Full => (
                StatusCode::INSUFFICIENT_STORAGE,
                json!({ "error": format!("the ban set is full (bans.max_bans = {})", d.bans.max()) }),
            ),
            Added::Banned | Added::AlreadyBanned => {
                if let Some(c) = &self.state.cluster {
                    c.publish(crate::cluster::Event::Ban(store::BanRecord::of(
                        &b, &clocks,
                    )));
                }
                if added == Added::Banned {
                    self.state
                        .metrics
                        .bans
                        .with_label_values(&["manual", "enforce"])
                        .inc();
                }
                let save_error = self.persist().await;
                let mut v = json!({
                    "result": if added == Added::Banned { "banned" } else { "already banned for longer" },
                    "ban": store::BanRecord::of(&b, &clocks),
                    "save_error": save_error,
                });
                if allow_listed {
                    v["warning"] = json!("this address is on the allow list, which wins over bans");
                }
                (StatusCode::OK, v)
            }
        }
    }

    /// Saves the state file now (after a change by hand), off the async threads.
    /// Saves the state file now (after a change by hand), off the async threads; the error,
    /// if it failed (the change still applies in memory).
    async fn persist(&self) -> Option<String> {
        let state = self.state.clone();
        match tokio::task::spawn_blocking(move || crate::reload::save_bans(&state, true)).await {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(e) => Some(format!("the save task failed: {e}")),
        }
    }

    /// `GET /admin/bans/export?format=plain|nginx|nginx-geo|aws-waf-ipset|json&aggregate=true&max=N`.
    fn export(&self, query: &str) -> Result<crate::defense::Exported, String> {
        let params = parse_query(query, &["format", "aggregate", "max"])?;
        let format = params.get("format").map_or("plain", |f| f.as_str());
        let options = ExportOptions {
            max_entries: match params.get("max") {
                Some(m) => Some(
                    m.parse()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| format!("max {m:?}: a number above 0"))?,
                ),
                None => None,
            },
            aggregate: params
                .get("aggregate")
                .is_some_and(|a| matches!(a.as_str(), "true" | "1" | "yes")),
        };
        let clocks = self.clocks();
        export_records(
            &self.state.defense.records(&clocks),
            clocks.unix,
            format,
            &options,
            Some(&self.state.snapshot.load().config.policy.allow),
        )
        .map_err(|e| e.to_string())
    }

    /// `POST /admin/under-attack?switch=on|off|auto`.
    async fn switch(&self, query: &str, who: &str) -> (StatusCode, serde_json::Value) {
        let params = match parse_query(query, &["switch"]) {
            Ok(p) => p,
            Err(e) => return (StatusCode::BAD_REQUEST, json!({ "error": e })),
        };
        let Some(setting) = params.get("switch").and_then(|s| Setting::parse(s)) else {
            return (
                StatusCode::BAD_REQUEST,
                json!({ "error": "give switch=on, switch=off or switch=auto" }),
            );
        };
        let d = &self.state.defense;
        let changed = d.attack.set(setting, who, unix_now());
        if let Some(c) = &self.state.cluster {
            c.publish(crate::cluster::Event::Attack {
                setting,
                by: who.to_string(),
            });
        }
        tracing::warn!(target: "sekisho::audit", by = who, setting = setting.as_str(), on = d.attack.is_on(), "under-attack switch set by hand");
        if let Some(c) = &changed {
            announce_switch(&self.state, c);
        }
        let save_error = self.persist().await;
        let mut v = self.under_attack();
        v["save_error"] = json!(save_error);
        (StatusCode::OK, v)
    }

    /// `GET /admin/explain?method=GET&url=/login&ip=ADDR&header=Name:%20value&country=JP&ja4=...`
    /// (`header` repeatable): the explanation against the live config, buckets, bans and
    /// switch. Reads only: no token is taken, nothing changes.
    fn explain(&self, query: &str) -> Result<serde_json::Value, String> {
        let params = parse_query_all(query, &["method", "url", "ip", "header", "country", "ja4"])?;
        let one = |name: &str| -> Result<Option<String>, String> {
            let values: Vec<&String> = params
                .iter()
                .filter(|(k, _)| k == name)
                .map(|(_, v)| v)
                .collect();
            match values[..] {
                [] => Ok(None),
                [v] => Ok(Some(v.clone())),
                _ => Err(format!("{name}: give it once")),
            }
        };
        let url = one("url")?.ok_or("give url=PATH or url=ABSOLUTE-URL (e.g. url=/login)")?;
        let peer = match one("ip")? {
            None => explain::DEFAULT_PEER,
            Some(ip) => ip
                .trim()
                .parse()
                .map_err(|_| format!("ip {ip:?} is not an IP address"))?,
        };
        let req = explain::Request {
            method: one("method")?.unwrap_or_else(|| "GET".to_string()),
            url,
            peer,
            headers: params
                .iter()
                .filter(|(k, _)| k == "header")
                .map(|(_, v)| v.clone())
                .collect(),
            country: one("country")?,
            ja4: one("ja4")?,
        };
        let s = &self.state;
        let snap = s.snapshot.load();
        let live = explain::LiveState {
            limiter: &s.limiter,
            bans: &s.defense.bans,
            under_attack: s.defense.attack.is_on(),
            now: s.clock.now(),
        };
        let mut v = explain::explain(&snap.config, &req, Some(&live))?;
        v["generation"] = json!(snap.generation);
        v["config"] = json!(snap.config.path.display().to_string());
        Ok(v)
    }

    /// `GET /admin/under-attack`.
    fn under_attack(&self) -> serde_json::Value {
        let snap = self.state.snapshot.load();
        let policy = &snap.config.policy;
        let mut v = self.state.defense.attack.describe();
        v["profile_rules"] = json!(policy.rules[policy.profile_from.min(policy.rules.len())..]
            .iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>());
        v["auto_configured"] = json!(snap.config.defense.auto.is_some());
        v
    }

    /// `GET /admin/under-attack/preview?window=5m`.
    fn preview(&self, query: &str) -> Result<serde_json::Value, String> {
        let params = parse_query(query, &["window"])?;
        let window = match params.get("window") {
            None => Duration::from_secs(300),
            Some(w) => parse_duration(w)
                .ok()
                .filter(|d| !d.is_zero() && *d <= Duration::from_secs(15 * 60))
                .ok_or_else(|| format!("window {w:?}: from 1s to 15m"))?,
        };
        let s = &self.state;
        let now = s.clock.now();
        let (requests, _) = s.metrics.request_totals(&Default::default());
        let would = would_refuse(s);
        let on = s.defense.attack.is_on();
        let examples: Vec<serde_json::Value> = s
            .defense
            .preview
            .examples()
            .iter()
            .map(|e| json!({ "at": e.at_unix, "client_ip": e.ip.to_string(), "path": e.path, "rule": e.rule }))
            .collect();
        let counts = s.defense.preview.window(window, now, requests, &would);
        let covered = counts.as_ref().map(|c| c.0);
        let (requests, by_rule) = counts.map(|c| (c.1, c.2)).unwrap_or_default();
        let total: u64 = by_rule.iter().map(|(_, n)| n).sum();
        Ok(json!({
            "on": on,
            "window_seconds": window.as_secs(),
            "covered_seconds": covered,
            "requests": requests,
            "would_refuse": total,
            "would_refuse_share": if requests > 0 { total as f64 / requests as f64 } else { 0.0 },
            "by_rule": by_rule.iter().map(|(r, n)| json!({ "rule": r, "would_refuse": n })).collect::<Vec<_>>(),
            "recent_examples": examples,
            "note": if on {
                "the profile is on: its refusals are in sekisho_requests_total, not previewed here"
            } else {
                "requests the normal rules passed and the profile would have refused; counted per request (a request counts once, under the first profile rule that would refuse it); the window starts at the oldest 10-second mark inside it"
            },
        }))
    }

    async fn reload(&self) -> (StatusCode, serde_json::Value) {
        let (tx, rx) = oneshot::channel();
        if self.reload.send(Trigger::Admin(tx)).await.is_err() {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"result": "error", "errors": ["the reload task is not running"]}),
            );
        }
        match tokio::time::timeout(Duration::from_secs(120), rx).await {
            Ok(Ok(Ok(done))) => (
                StatusCode::OK,
                json!({"result": "ok", "generation": done.generation, "duration_ms": done.duration_ms, "warnings": done.warnings}),
            ),
            Ok(Ok(Err(errors))) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({"result": "error", "errors": errors}),
            ),
            _ => (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"result": "error", "errors": ["the reload did not answer"]}),
            ),
        }
    }
}

/// Why a ban of `net` by hand is wider than anyone means without saying so: IPv4 shorter than
/// /8 (a sixteenth of the IPv4 space, or more) or IPv6 shorter than /16; `None` if it is not.
/// The largest single allocations are a /8 (IPv4) and a /12-/16 (an RIR's IPv6 block).
fn too_wide(net: IpNet) -> Option<String> {
    let (family, bits, min) = match net {
        IpNet::V4(_) => ("IPv4", 32u32, 8u8),
        IpNet::V6(_) => ("IPv6", 128, 16),
    };
    let len = net.prefix_len();
    if len == 0 {
        Some(format!("{net} covers every {family} address"))
    } else if len < min {
        Some(format!(
            "{net} covers 1/{} of all {family} addresses (2^{}; a ban by hand wider than a /{min} needs force)",
            1u64 << len,
            bits - u32::from(len)
        ))
    } else {
        None
    }
}

/// `a=1&b=x%20y` → map, refusing names not in `known` and decoding `%XX` and `+`; a name
/// given twice keeps its last value.
pub(crate) fn parse_query(
    query: &str,
    known: &[&str],
) -> Result<std::collections::HashMap<String, String>, String> {
    Ok(parse_query_all(query, known)?.into_iter().collect())
}

/// [`parse_query`], every pair in order (for a parameter that can be repeated).
pub(crate) fn parse_query_all(
    query: &str,
    known: &[&str],
) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if !known.contains(&k) {
            return Err(format!(
                "unknown parameter {k:?} (use {})",
                known.join(", ")
            ));
        }
        out.push((k.to_string(), percent_decode(v)?));
    }
    Ok(out)
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("bad escape in {s:?}"))?;
                out.push(hex);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| format!("{s:?} is not UTF-8"))
}

fn reply(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    let len = r.body().len();
    let h = r.headers_mut();
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        h.insert(http::header::CONTENT_TYPE, v);
    }
    h.insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(len));
    h.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    r
}

fn json_reply(status: StatusCode, v: &serde_json::Value) -> Response<Vec<u8>> {
    let mut body = serde_json::to_vec_pretty(v).unwrap_or_default();
    body.push(b'\n');
    reply(status, "application/json", body)
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let method = req.method.clone();
        let path = req.uri.path().to_string();
        let query = req.uri.query().unwrap_or("").to_string();
        let who = session
            .client_addr()
            .map_or_else(|| "admin".to_string(), |a| format!("admin {a}"));
        match (method.as_str(), path.as_str()) {
            ("GET", "/healthz") => reply(StatusCode::OK, "text/plain", b"ok\n".to_vec()),
            ("GET", "/readyz") => {
                let reasons = ready::not_ready(&self.state, &self.listeners);
                let status = if reasons.is_empty() {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                reply(status, "text/plain", ready::body(&reasons).into_bytes())
            }
            ("GET", "/admin/status") => json_reply(StatusCode::OK, &self.status()),
            ("GET", "/admin/top") => {
                let query = session.req_header().uri.query().unwrap_or("").to_string();
                match self.top(&query) {
                    Ok(v) => json_reply(StatusCode::OK, &v),
                    Err(e) => json_reply(StatusCode::BAD_REQUEST, &json!({ "error": e })),
                }
            }
            ("GET", "/metrics") => reply(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                self.metrics(),
            ),
            ("POST", "/admin/reload") => {
                let (status, v) = self.reload().await;
                json_reply(status, &v)
            }
            ("GET", "/admin/bans") => json_reply(StatusCode::OK, &self.bans()),
            ("POST", "/admin/bans") | ("DELETE", "/admin/bans") => {
                let (status, v) = self.ban_by_hand(&query, &who, method == http::Method::POST).await;
                json_reply(status, &v)
            }
            ("GET", "/admin/bans/export") => match self.export(&query) {
                Ok(e) => {
                    let mut r = reply(StatusCode::OK, e.content_type, e.text.into_bytes());
                    // how many bans the allow list kept out of the export
                    r.headers_mut().insert(
                        "x-sekisho-allow-listed-left-out",
                        http::HeaderValue::from(e.allow_listed),
                    );
                    r
                }
                Err(e) => json_reply(StatusCode::BAD_REQUEST, &json!({ "error": e })),
            },
            ("GET", "/admin/explain") => match self.explain(&query) {
                Ok(v) => json_reply(StatusCode::OK, &v),
                Err(e) => json_reply(StatusCode::BAD_REQUEST, &json!({ "error": e })),
            },
            ("GET", "/admin/under-attack") => json_reply(StatusCode::OK, &self.under_attack()),
            ("POST", "/admin/under-attack") => {
                let (status, v) = self.switch(&query, &who).await;
                json_reply(status, &v)
            }
            ("GET", "/admin/under-attack/preview") => match self.preview(&query) {
                Ok(v) => json_reply(StatusCode::OK, &v),
                Err(e) => json_reply(StatusCode::BAD_REQUEST, &json!({ "error": e })),
            },
            (_, "/healthz" | "/readyz" | "/metrics" | "/admin/status" | "/admin/top" | "/admin/reload" | "/admin/bans" | "/admin/bans/export" | "/admin/under-attack" | "/admin/under-attack/preview" | "/admin/explain") => reply(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                b"method not allowed\n".to_vec(),
            ),
            _ => reply(
                StatusCode::NOT_FOUND,
                "text/plain",
                b"not found; try /healthz, /readyz, /metrics, /admin/status, /admin/top?by=ip, POST /admin/reload, /admin/bans, /admin/bans/export?format=plain, /admin/under-attack, /admin/under-attack/preview, /admin/explain?method=GET&url=/\n"
                    .to_vec(),
            ),
        }
    }
}
