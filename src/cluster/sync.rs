//! The sync task: one pipelined batch to the store every `cluster.sync_interval` (counts of
//! shared buckets, the `over` and `events` streams read from where they were left, this
//! instance's events, and once a second the heartbeat and the membership), and the one log
//! line when the store goes away or comes back.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use redis::aio::ConnectionManagerConfig;
use redis::Value;

use super::events::{self, Event, PRUNE_BANS};
use super::store::{self, int, Batch, Conn, MEMBER_TTL_MS};
use super::{Cluster, Epoch, Member};
use crate::defense::attack::Switched;
use crate::defense::store::{BanRecord, Clocks};
use crate::defense::Defense;
use crate::limiter::{BucketKey, Limiter, Nanos};
use crate::metrics::Metrics;

/// Events kept for the next sync while the store is down (the oldest are dropped past it).
const OUTBOX_MAX: usize = 10_000;

/// What the sync reads and changes of the process: the proxy's state implements it.
pub trait Host: Send + Sync {
    /// The token buckets.
    fn limiter(&self) -> &Limiter;
    /// Bans and the switch.
    fn defense(&self) -> &Defense;
    /// The metrics.
    fn metrics(&self) -> &Metrics;
    /// The engine's clock now.
    fn now(&self) -> Nanos;
    /// Logs and counts a switch of the under-attack profile.
    fn announce_switch(&self, switched: &Switched);
}

/// The background service that runs the sync.
pub struct Service {
    state: Arc<dyn Host>,
    cluster: Arc<Cluster>,
}

impl Service {
    /// The service syncing `cluster` for `state`.
    pub fn new(state: Arc<dyn Host>, cluster: Arc<Cluster>) -> Self {
        Self { state, cluster }
    }
}

/// Where the streams were left, and what is due.
#[derive(Default)]
struct Cursor {
    over: String,
    events: String,
    /// The store's `epoch` when last read; `None`: not yet in step with the store.
    epoch: Option<String>,
    ticks: u64,
}

#[async_trait]
impl BackgroundService for Service {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let cluster = self.cluster.clone();
        let settings = cluster.settings().clone();
        let conn = match connect(&settings) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(store = %settings.redacted_url(), "cluster: cannot set up the store client: {e}");
                return;
            }
        };
        let _ = cluster.conn.set(conn.clone());
        self.state
            .metrics()
            .cluster_enabled
            .store(true, Ordering::Relaxed);
        tracing::info!(store = %settings.redacted_url(), name = %settings.name, instance = %settings.instance, "cluster: syncing every {}", humantime::format_duration(settings.sync_interval));
        let mut cursor = Cursor::default();
        let mut tick = tokio::time::interval(settings.sync_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => break,
            }
            let result = if cursor.epoch.is_none() {
                init(&*self.state, &cluster, &conn, &mut cursor).await
            } else {
                round(&*self.state, &cluster, &conn, &mut cursor).await
            };
            cursor.ticks += 1;
            match result {
                Ok(()) => went_up(&*self.state, &cluster),
                Err(e) => went_down(&*self.state, &cluster, e),
            }
        }
        // a last batch, so that the counts of the last interval are not lost
        if cursor.epoch.is_some() {
            let _ = round(&*self.state, &cluster, &conn, &mut cursor).await;
        }
        // leave the membership at once rather than after MEMBER_TTL_MS
        let mut c = conn.clone();
        let _ = store::within(
            settings.timeout.max(Duration::from_millis(100)),
            redis::cmd("ZREM")
                .arg(format!("{}members", cluster.prefix))
                .arg(&settings.instance)
                .query_async::<Value>(&mut c),
        )
        .await;
    }
}

/// The client for `settings` (connects lazily; reconnects by itself).
fn connect(settings: &super::ClusterSettings) -> redis::RedisResult<Conn> {
    let client = redis::Client::open(settings.url.as_str())?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(settings.connect_timeout))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(500));
    Conn::new_lazy_with_config(client, config)
}

/// How long a background batch may take: an interval, at least 200 ms.
fn deadline(cluster: &Cluster) -> Duration {
    cluster
        .settings
        .sync_interval
        .max(Duration::from_millis(200))
}

fn went_up(state: &dyn Host, cluster: &Cluster) {
    if !cluster.up.swap(true, Ordering::AcqRel) {
        let since = cluster.down_since.swap(0, Ordering::Relaxed);
        if cluster.synced_once.swap(true, Ordering::Relaxed) {
            tracing::warn!(store = %cluster.settings.redacted_url(), down_since = since, "cluster: the store answers again; shared limits and bans are in step with the fleet");
        } else {
            tracing::info!(store = %cluster.settings.redacted_url(), instances = cluster.instances(), "cluster: in step with the store");
        }
        *cluster.last_error.lock() = None;
    }
    cluster.counts_valid.store(true, Ordering::Release);
    state.metrics().cluster_up.set(1);
}

fn went_down(state: &dyn Host, cluster: &Cluster, error: String) {
    cluster.counts_valid.store(false, Ordering::Release);
    state.metrics().cluster_up.set(0);
    let was_up = cluster.up.swap(false, Ordering::AcqRel);
    let first = cluster.down_since.load(Ordering::Relaxed) == 0;
    if first {
        cluster
            .down_since
            .store(unix_now().max(1), Ordering::Relaxed);
    }
    if was_up || first {
        tracing::error!(store = %cluster.settings.redacted_url(), "cluster: the store does not answer ({error}); shared limits fall back to a local share (1/{} of each), bans and the switch stay as they are until it is back", cluster.instances());
    }
    *cluster.last_error.lock() = Some(error);
}

/// The first round trip, and the one after the store lost its data: read the whole state
/// (bans, the switch, where the streams are), then publish this instance's live bans.
async fn init(
    state: &dyn Host,
    cluster: &Cluster,
    conn: &Conn,
    cursor: &mut Cursor,
) -> Result<(), String> {
    let p = &cluster.prefix;
    let fresh = format!("{:016x}", rand_u64());
    let mut pipe = redis::pipe();
    pipe.cmd("SET")
        .arg(format!("{p}epoch"))
        .arg(&fresh)
        .arg("NX");
    pipe.cmd("GET").arg(format!("{p}epoch"));
    pipe.cmd("XREVRANGE")
        .arg(format!("{p}over"))
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1);
    pipe.cmd("XREVRANGE")
        .arg(format!("{p}events"))
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1);
    pipe.cmd("HGETALL").arg(format!("{p}bans"));
    pipe.cmd("GET").arg(format!("{p}attack"));
    state.metrics().cluster_commands.inc_by(6);
    let mut c = conn.clone();
    let reply: Vec<Value> = store::within(deadline(cluster), pipe.query_async(&mut c))
        .await
        .inspect_err(|_| {
            state
                .metrics()
                .cluster_errors
                .with_label_values(&["connect"])
                .inc()
        })?;
    let [_, epoch, over, evs, bans, attack] = reply.as_slice() else {
        return Err("unexpected reply to the first batch".into());
    };
    let last_id = |v: &Value| {
        events::entries(v)
            .into_iter()
            .next()
            .map_or_else(|| "0-0".to_string(), |(id, _)| id)
    };
    cursor.over = last_id(over);
    cursor.events = last_id(evs);
    let now = state.now();
    let clocks = clocks(now);
    let mut taken = 0;
    for rec in events::records(bans) {
        taken += usize::from(apply_ban(state, &rec, &clocks));
    }
    if let Some((setting, by)) = events::attack(attack) {
        set_switch(state, setting, &by);
    } else if let (setting, true) = state.defense().attack.setting() {
        cluster.publish(Event::Attack {
            setting,
            by: cluster.settings.instance.clone(),
        });
    }
    // this instance's bans (from its state file, or made while the store was away) for
    // the others; the store keeps the longer of two bans of a network
    for ban in state.defense().bans.live_bans(now) {
        cluster.publish(Event::Ban(BanRecord::of(&ban, &clocks)));
    }
    tracing::info!(
        bans = taken,
        "cluster: read the fleet's bans from the store"
    );
    cursor.epoch = events::text(epoch).or(Some(fresh));
    Ok(())
}

/// One sync batch.
async fn round(
    state: &dyn Host,
    cluster: &Cluster,
    conn: &Conn,
    cursor: &mut Cursor,
) -> Result<(), String> {
    let p = &cluster.prefix;
    let now = state.now();
    let epoch = Epoch::now(now);
    let counts = cluster.counts_valid.load(Ordering::Acquire);
    let batch = Batch::new(cluster, state.limiter(), cluster.drain(), counts, &epoch);
    let outbox = std::mem::take(&mut *cluster.outbox.lock());
    let heartbeat = cursor.ticks % ticks_per_second(cluster) == 0;
    let prune = cursor.ticks % (10 * ticks_per_second(cluster)) == 0;
    let mut pipe = redis::pipe();
    let mut sent = 0u64;
    if let Some(b) = &batch {
        pipe.add_command(b.cmd().clone());
        sent += 1;
    }
    pipe.cmd("XRANGE")
        .arg(format!("{p}over"))
        .arg(format!("({}", cursor.over))
        .arg("+")
        .arg("COUNT")
        .arg(10_000);
    pipe.cmd("XRANGE")
        .arg(format!("{p}events"))
        .arg(format!("({}", cursor.events))
        .arg("+")
        .arg("COUNT")
        .arg(1_000);
    sent += 2;
    let mut published = 0;
    for e in &outbox {
        published += events::publish(&mut pipe, p, e);
    }
    sent += published;
    if heartbeat {
        let ms = epoch.unix_us() / 1000;
        pipe.cmd("ZADD")
            .arg(format!("{p}members"))
            .arg(ms)
            .arg(&cluster.settings.instance);
        pipe.cmd("ZREMRANGEBYSCORE")
            .arg(format!("{p}members"))
            .arg("-inf")
            .arg(ms.saturating_sub(MEMBER_TTL_MS));
        pipe.cmd("ZRANGE")
            .arg(format!("{p}members"))
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES");
        pipe.cmd("GET").arg(format!("{p}epoch"));
        sent += 4;
    }
    if prune {
        pipe.cmd("EVAL")
            .arg(PRUNE_BANS)
            .arg(2)
            .arg(format!("{p}bans"))
            .arg(format!("{p}ban_ends"))
            .arg(epoch.unix_us() / 1_000_000)
            .arg(state.defense().bans.max());
        sent += 1;
    }
    state.metrics().cluster_commands.inc_by(sent);
    let mut c = conn.clone();
    let reply: Vec<Value> = match store::within(deadline(cluster), pipe.query_async(&mut c)).await {
        Ok(r) => r,
        Err(e) => {
            state
                .metrics()
                .cluster_errors
                .with_label_values(&["sync"])
                .inc();
            // the counts may or may not have been applied: never send them twice; the
            // buckets' times go with the next batch instead
            if let Some(b) = batch {
                cluster.touch(b.keys.into_iter().map(|(k, _)| k));
            }
            let mut out = cluster.outbox.lock();
            let mut keep = outbox;
            keep.append(&mut out);
            let drop = keep.len().saturating_sub(OUTBOX_MAX);
            keep.drain(..drop);
            *out = keep;
            return Err(e);
        }
    };
    let mut r = reply.iter();
    if let Some(b) = &batch {
        if let Some(v) = r.next() {
            b.apply(cluster, state.limiter(), v, &Epoch::now(state.now()));
        }
    }
    if let Some(v) = r.next() {
        let rules = cluster.rules.load();
        let now = state.now();
        let epoch = Epoch::now(now);
        for (id, f) in events::entries(v) {
            cursor.over = id;
            let get = |n: &str| f.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
            let (Some(rule), Some(key), Some(t)) = (get("r"), get("k"), get("t")) else {
                continue;
            };
            let (Some(slot), Ok(key), Ok(t)) = (
                rules.by_name.get(rule),
                u128::from_str_radix(key, 16),
                t.parse::<u64>(),
            ) else {
                continue;
            };
            state
                .limiter()
                .raise(BucketKey::new(*slot, key), epoch.to_mono(t), now);
        }
    }
    if let Some(v) = r.next() {
        let clocks = clocks(state.now());
        for (id, f) in events::entries(v) {
            cursor.events = id;
            match events::decode(&f) {
                Some(Event::Ban(rec)) => {
                    apply_ban(state, &rec, &clocks);
                }
                Some(Event::Unban(net)) => {
                    if let Ok(n) = net.parse() {
                        if state.defense().bans.remove(n) {
                            tracing::info!(target: "sekisho::audit", %net, "ban lifted on another instance");
                        }
                    }
                }
                Some(Event::Attack { setting, by }) => set_switch(state, setting, &by),
                None => {}
            }
        }
    }
    for _ in 0..published {
        r.next();
    }
    if heartbeat {
        let _ = (r.next(), r.next());
        if let Some(v) = r.next() {
            let ms = epoch.unix_us() / 1000;
            let members = events::members(v)
                .into_iter()
                .map(|(instance, seen)| Member {
                    instance,
                    last_seen_ms: ms.saturating_sub(seen),
                })
                .collect();
            cluster.set_members(members);
            state
                .metrics()
                .cluster_instances
                .set(i64::from(cluster.instances()));
        }
        if let Some(v) = r.next() {
            let now_epoch = events::text(v);
            if now_epoch != cursor.epoch {
                tracing::warn!("cluster: the store lost its data (a restart without persistence?); publishing this instance's bans again");
                cursor.epoch = None;
            }
        }
    }
    if prune {
        if let Some(v) = r.next() {
            let n = int(v);
            if n > 0 {
                tracing::debug!(dropped = n, "cluster: ended bans dropped from the store");
            }
        }
    }
    Ok(())
}

/// Sync batches in a second (at least 1).
fn ticks_per_second(cluster: &Cluster) -> u64 {
    (1000 / cluster.settings.sync_interval.as_millis().max(1) as u64).max(1)
}

/// Monotonic and Unix now.
fn clocks(now: Nanos) -> Clocks {
    Clocks {
        mono: now,
        unix: unix_now(),
    }
}

/// Adds a ban read from the store; whether it was new here.
fn apply_ban(state: &dyn Host, rec: &BanRecord, clocks: &Clocks) -> bool {
    let Ok(ban) = rec.to_ban(clocks) else {
        return false;
    };
    if !ban.live(clocks.mono) {
        return false;
    }
    let net = ban.net;
    let added = state.defense().bans.add(ban, clocks.mono);
    let new = added == crate::defense::Added::Banned;
    if new {
        tracing::info!(target: "sekisho::audit", %net, source = %rec.source, reason = %rec.reason, "ban from another instance");
    }
    new
}

/// Sets the switch as another instance set it.
fn set_switch(state: &dyn Host, setting: crate::defense::Setting, by: &str) {
    if state.defense().attack.setting() == (setting, true) {
        return;
    }
    if let Some(s) = state.defense().attack.set(setting, by, unix_now()) {
        state.announce_switch(&s);
    }
    tracing::warn!(target: "sekisho::audit", by, setting = setting.as_str(), "under-attack switch set on another instance");
}

/// A random number for the store's epoch.
fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = foldhash::fast::RandomState::default().build_hasher();
    h.write_u64(unix_now());
    h.write_u32(std::process::id());
    h.finish()
}

/// Seconds since the Unix epoch.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
