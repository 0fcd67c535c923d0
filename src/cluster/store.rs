//! The store's side: key names, the Lua scripts, and the round trips (the sync batch and the
//! exact check). Every round trip has a deadline; none is made on the request path except an
//! exact rule's check.
//!
//! Keys (all under `sekisho:{name}:`), each with its own expiry or bound:
//! - `l:{rule}:{key}`: a shared bucket's arrival time (Unix µs), expiring when the bucket is
//!   full again (plus a second);
//! - `over`: a stream of buckets that went over their limit (rule, key, time), capped at
//!   [`OVER_MAXLEN`] entries;
//! - `members`: a sorted set of instance names by last heartbeat (ms); entries older than
//!   [`MEMBER_TTL_MS`] are dropped by every heartbeat;
//! - `bans` (hash: network → record), `ban_ends` (sorted set: network → when its history
//!   ends), `events` (stream of bans, unbans and switch changes, capped), `attack` (the switch
//!   set by hand), `epoch` (a random value: changes when the store lost its data).

use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::Value;

use super::{Cluster, Epoch};
use crate::engine::ExactCheck;
use crate::limiter::{BucketKey, Limiter, Nanos};

/// The connection to the store (it reconnects by itself).
pub type Conn = ConnectionManager;

/// Entries kept in the `over` stream (about a minute of a flood of distinct keys).
pub const OVER_MAXLEN: u32 = 100_000;
/// Entries kept in the `events` stream.
pub const EVENTS_MAXLEN: u32 = 10_000;
/// An instance without a heartbeat for this long is not live.
pub const MEMBER_TTL_MS: u64 = 3_000;

/// The batch script: for each key, adds the tokens this instance took to the store's bucket,
/// raises it to this instance's own time for the bucket (merged with max: after an outage the
/// buckets' times are sent with no count, so nothing is counted twice), sets its expiry, and
/// records a bucket over its limit on the `over` stream. Returns each bucket's time.
///
/// `ARGV`: now (µs), the `over` stream, its cap, then per key: count, own time (µs, 0: none),
/// emission (µs), tolerance (µs), rule, key.
const SYNC: &str = r#"
local now = tonumber(ARGV[1])
local out = {}
for i, k in ipairs(KEYS) do
  local b = 3 + (i - 1) * 6
  local n = tonumber(ARGV[b + 1])
  local own = tonumber(ARGV[b + 2])
  local e = tonumber(ARGV[b + 3])
  local tau = tonumber(ARGV[b + 4])
  local t = tonumber(redis.call('GET', k) or '0')
  if n > 0 then t = math.max(t, now) + n * e end
  if own > t then t = own end
  if t > now then
    redis.call('SET', k, string.format('%d', t), 'PX', math.floor((t - now) / 1000) + 1000)
    if n > 0 and t - now > tau - e then
      redis.call('XADD', ARGV[2], 'MAXLEN', '~', ARGV[3], '*', 'r', ARGV[b + 5], 'k', ARGV[b + 6], 't', string.format('%d', t))
    end
  end
  out[i] = t
end
return out
"#;

/// One exact check, GCRA in the store: `{1, time}` admitted (the token taken), `{0, time,
/// wait}` refused (nothing changed). `ARGV`: now, emission, tolerance (µs).
const EXACT: &str = r#"
local now = tonumber(ARGV[1])
local e = tonumber(ARGV[2])
local tau = tonumber(ARGV[3])
local t = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), now)
local ahead = t + e - now
if ahead > tau then return {0, t, ahead - tau} end
t = t + e
redis.call('SET', KEYS[1], string.format('%d', t), 'PX', math.floor((t - now) / 1000) + 1000)
return {1, t, 0}
"#;

/// A bucket's key in the store.
pub fn bucket_key(prefix: &str, rule: &str, key: u128) -> String {
    format!("{prefix}l:{rule}:{key:032x}")
}

/// An integer reply, or 0.
pub fn int(v: &Value) -> i64 {
    match v {
        Value::Int(i) => *i,
        Value::BulkString(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
        Value::SimpleString(s) => s.parse().unwrap_or(0),
        _ => 0,
    }
}

/// The buckets of one sync batch, as sent.
pub struct Batch {
    /// Each key with the count sent for it.
    pub keys: Vec<(BucketKey, u32)>,
    cmd: redis::Cmd,
}

impl Batch {
    /// The batch for `taken` (bucket, tokens taken since the last sync). Buckets of rules
    /// no longer shared are left out. `counts`: whether the counts are sent (false after an
    /// outage: only the buckets' times).
    pub fn new(
        cluster: &Cluster,
        limiter: &Limiter,
        taken: Vec<(BucketKey, u32)>,
        counts: bool,
        epoch: &Epoch,
    ) -> Option<Self> {
        let rules = cluster.rules.load();
        let mut cmd = redis::cmd("EVAL");
        let mut keys = Vec::with_capacity(taken.len());
        let mut args: Vec<String> = Vec::with_capacity(taken.len() * 6);
        let mut names = Vec::with_capacity(taken.len());
        for (key, n) in taken {
            let Some(rule) = rules.by_slot.get(&key.slot()) else {
                continue;
            };
            let own = limiter
                .tat(key)
                .filter(|t| *t > epoch.mono)
                .map_or(0, |t| epoch.to_unix_us(t));
            let n = if counts { n } else { 0 };
            names.push(bucket_key(&cluster.prefix, &rule.name, key.key()));
            args.push(n.to_string());
            args.push(own.to_string());
            args.push(rule.quota.emission().div_ceil(1000).to_string());
            args.push((rule.quota.tolerance() / 1000).to_string());
            args.push(rule.name.to_string());
            args.push(format!("{:032x}", key.key()));
            keys.push((key, n));
        }
        if keys.is_empty() {
            return None;
        }
        cmd.arg(SYNC).arg(names.len());
        for n in &names {
            cmd.arg(n);
        }
        cmd.arg(epoch.unix_us())
            .arg(format!("{}over", cluster.prefix))
            .arg(OVER_MAXLEN);
        for a in &args {
            cmd.arg(a);
        }
        Some(Self { keys, cmd })
    }

    /// The command.
    pub fn cmd(&self) -> &redis::Cmd {
        &self.cmd
    }

    /// Raises each local bucket to the store's time for it, plus what this instance took
    /// since the batch was made (still pending).
    pub fn apply(&self, cluster: &Cluster, limiter: &Limiter, reply: &Value, epoch: &Epoch) {
        let Value::Array(times) = reply else {
            return;
        };
        let rules = cluster.rules.load();
        for ((key, _), t) in self.keys.iter().zip(times) {
            let t = int(t);
            if t <= 0 {
                continue;
            }
            let since = cluster.shard(key).lock().get(key).copied().unwrap_or(0);
            let emission = rules
                .by_slot
                .get(&key.slot())
                .map_or(0, |r| r.quota.emission());
            let tat = epoch
                .to_mono(t as u64)
                .saturating_add(u64::from(since) * emission);
            limiter.raise(*key, tat, epoch.mono);
        }
    }
}

/// The exact checks of one request, pipelined, within `cluster.timeout`.
pub async fn exact(
    cluster: &Cluster,
    conn: &Conn,
    checks: &[ExactCheck],
    limiter: &Limiter,
    now: Nanos,
) -> Option<Vec<Result<(), Nanos>>> {
    let epoch = Epoch::now(now);
    let rules = cluster.rules.load();
    let mut pipe = redis::pipe();
    for c in checks {
        let name = rules
            .by_slot
            .get(&c.key.slot())
            .map_or("?", |r| &*r.name)
            .to_string();
        pipe.cmd("EVAL")
            .arg(EXACT)
            .arg(1)
            .arg(bucket_key(&cluster.prefix, &name, c.key.key()))
            .arg(epoch.unix_us())
            .arg(c.quota.emission().div_ceil(1000))
            .arg(c.quota.tolerance() / 1000);
    }
    let mut conn = conn.clone();
    let reply: Vec<Value> =
        match tokio::time::timeout(cluster.settings.timeout, pipe.query_async(&mut conn)).await {
            Ok(Ok(r)) => r,
            _ => return None,
        };
    let mut out = Vec::with_capacity(checks.len());
    for (c, r) in checks.iter().zip(&reply) {
        let Value::Array(a) = r else {
            return None;
        };
        let admitted = a.first().map(int) == Some(1);
        let t = a.get(1).map_or(0, int);
        if t > 0 {
            limiter.raise(c.key, epoch.to_mono(t as u64), now);
        }
        out.push(if admitted {
            Ok(())
        } else {
            let wait_us = a.get(2).map_or(0, int).max(1) as u64;
            Err(wait_us.saturating_mul(1000))
        });
    }
    (out.len() == checks.len()).then_some(out)
}

/// Runs `f` on the connection with a deadline; an error names what failed.
pub async fn within<T>(
    deadline: Duration,
    f: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, String> {
    match tokio::time::timeout(deadline, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "no answer within {}",
            humantime::format_duration(deadline)
        )),
    }
}
