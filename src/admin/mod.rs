//! The admin HTTP listener (loopback by default): health, readiness, status and admin actions.
//!
//! `GET /healthz` (the process answers), `GET /readyz` (a config is loaded and an upstream is
//! not marked down), `GET /admin/status` (JSON: generation, reloads, limiter, decisions),
//! `POST /admin/reload` (reload now; answers with the new generation or the errors).
//! Prometheus metrics join this listener in their own issue. No request path logic lives here.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use crate::limiter::Clock;
use crate::metrics::top::{Dimension, MINUTES};
use crate::proxy::State;
use crate::reload::Trigger;

/// The admin app.
pub struct Admin {
    state: Arc<State>,
    reload: mpsc::Sender<Trigger>,
}

impl Admin {
    /// An admin app over `state`, sending reload requests to `reload`.
    pub fn new(state: Arc<State>, reload: mpsc::Sender<Trigger>) -> Self {
        Self { state, reload }
    }

    fn status(&self) -> serde_json::Value {
        let s = &self.state;
        let snap = s.snapshot.load();
        let r = &s.reloads;
        let policy = &snap.config.policy;
        let rules: Vec<serde_json::Value> = policy
            .rules
            .iter()
            .zip(&snap.series.rules)
            .map(|(r, hits)| {
                let (mode, key) = match r.mode {
                    crate::config::Mode::Enforce => ("enforce", "refused"),
                    crate::config::Mode::Count => ("count", "would_refuse"),
                };
                json!({ "name": r.name, "mode": mode, key: hits.get() })
            })
            .collect();
        let deny_key = match policy.deny_mode {
            crate::config::Mode::Enforce => "refused",
            crate::config::Mode::Count => "would_refuse",
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
        json!({
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
        })
    }

    /// `GET /admin/top?by=ip|country|user_agent|path&window=5m&n=20`.
    fn top(&self, query: &str) -> Result<serde_json::Value, String> {
        let mut by = "ip";
        let mut window = 5;
        let mut n = 20;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "by" => by = v,
                "window" => {
                    window = v
                        .strip_suffix('m')
                        .unwrap_or(v)
                        .parse()
                        .ok()
                        .filter(|w| (1..=MINUTES as u64).contains(w))
                        .ok_or_else(|| format!("window {v:?}: use 1m to {MINUTES}m"))?;
                }
                "n" => {
                    n = v
                        .parse()
                        .ok()
                        .filter(|n| (1..=1000).contains(n))
                        .ok_or_else(|| format!("n {v:?}: use 1 to 1000"))?;
                }
                other => return Err(format!("unknown parameter {other:?} (by, window, n)")),
            }
        }
        let dim = Dimension::parse(by)
            .ok_or_else(|| format!("by {by:?}: use ip, country, user_agent or path"))?;
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
        let evicted = s.limiter.evictions();
        let shown = m.evictions.get();
        if evicted > shown {
            m.evictions.inc_by(evicted - shown);
        }
        m.render()
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
                json!({"result": "ok", "generation": done.generation, "duration_ms": done.duration_ms}),
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
        match (method.as_str(), path.as_str()) {
            ("GET", "/healthz") => reply(StatusCode::OK, "text/plain", b"ok\n".to_vec()),
            ("GET", "/readyz") => {
                let snap = self.state.snapshot.load();
                if snap.upstreams.any_up(self.state.clock.now()) {
                    reply(StatusCode::OK, "text/plain", b"ready\n".to_vec())
                } else {
                    reply(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "text/plain",
                        b"not ready: every upstream refused its last connection\n".to_vec(),
                    )
                }
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
            (_, "/healthz" | "/readyz" | "/metrics" | "/admin/status" | "/admin/top" | "/admin/reload") => reply(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                b"method not allowed\n".to_vec(),
            ),
            _ => reply(
                StatusCode::NOT_FOUND,
                "text/plain",
                b"not found; try /healthz, /readyz, /metrics, /admin/status, /admin/top?by=ip, POST /admin/reload\n"
                    .to_vec(),
            ),
        }
    }
}
