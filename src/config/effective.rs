//! `sekisho config`: a validated [`Config`] written back as YAML, the way `nginx -T` shows
//! what nginx runs. Every key is written with the value `run` uses, defaults filled in, in the
//! form the config accepts (`10s`, `10/s`), so the output is itself a config that loads to
//! the same model and prints the same text again.
//!
//! Each section renders itself by a `fn effective` in its own file, beside its parsing and
//! defaults; this file puts them in the order of [`RawConfig`](super::RawConfig) and adds what
//! the sections share: paths made absolute (a relative path would resolve against the folder
//! the output is saved in, not the original's), a log's target, and keys that are off
//! (`null`, with a comment saying so). What the model does not keep as written (a regex, a
//! list file's entries, an upstream's address) is printed from what it keeps: the regex's
//! source, the file's resolved path with its entry count, the upstream as written with what it
//! resolved to as a comment. YAML is written by `serde-saphyr`, which quotes what needs it.

use std::path::Path;

use serde::Serialize;
use serde_saphyr::Commented;

use super::{
    access_log, admin, client_ip, cluster, connections, defense, geo, listen, lists, reload, rules,
    upstreams, Config,
};
use crate::metrics::line_writer::Target;

/// A value that may be off: written as `null` (which reads back as not given) with `why` as
/// its comment.
pub(super) type Maybe<T> = Commented<Option<T>>;

/// `v`, or `null # off` when there is none.
pub(super) fn maybe<T>(v: Option<T>, off: &str) -> Maybe<T> {
    let comment = if v.is_some() { "" } else { off };
    Commented(v, comment.to_string())
}

/// `p` made absolute against the working directory, as `run` would open it.
pub(super) fn path(p: &Path) -> String {
    std::path::absolute(p)
        .as_deref()
        .unwrap_or(p)
        .to_string_lossy()
        .into_owned()
}

/// A log's `path:`: `-` for stdout, else the file's absolute path.
pub(super) fn target(t: &Target) -> String {
    match t {
        Target::Stdout => "-".into(),
        Target::File(p) => path(p),
    }
}

/// The whole config, in the order of [`RawConfig`](super::RawConfig).
#[derive(Serialize)]
struct Effective {
    #[serde(flatten)]
    process: listen::EffectiveProcess,
    upstreams: Vec<Commented<String>>,
    upstream_options: upstreams::EffectiveUpstreamOptions,
    client_ip: client_ip::EffectiveClientIp,
    lists: lists::EffectiveLists,
    max_tracked_keys: usize,
    admin: admin::EffectiveAdmin,
    geo: geo::EffectiveGeo,
    decision_log: Maybe<admin::EffectiveDecisionLog>,
    access_log: Maybe<access_log::EffectiveAccessLog>,
    metrics: admin::EffectiveMetrics,
    reload: reload::EffectiveReload,
    connections: connections::EffectiveConnections,
    cluster: Maybe<cluster::EffectiveCluster>,
    rules: Vec<rules::EffectiveRule>,
    bans: defense::EffectiveBans,
    autoban: Vec<defense::EffectiveAutoban>,
    under_attack: defense::EffectiveUnderAttack,
}

impl Config {
    /// The effective config as YAML: a header comment naming [`Config::path`] and this
    /// sekisho's version (its first line, the only one that names the file), then every
    /// section with every key.
    pub fn effective(&self) -> Result<String, serde_saphyr::SerializeError> {
        let (upstreams, upstream_options) = upstreams::effective(self);
        let (admin, metrics) = admin::effective(self);
        let (bans, autoban, under_attack) = defense::effective(self);
        let profile_from = self.policy.profile_from;
        let effective = Effective {
            process: listen::effective(self),
            upstreams,
            upstream_options,
            client_ip: self.client_ip.effective(),
            lists: lists::effective(self),
            max_tracked_keys: self.max_tracked_keys,
            admin,
            geo: self.geo.effective(),
            decision_log: maybe(
                self.decision_log.as_ref().map(|d| d.effective()),
                "off: no decision log",
            ),
            access_log: maybe(
                self.access_log.as_ref().map(|a| a.effective()),
                "off: no access log",
            ),
            metrics,
            reload: self.reload.effective(),
            connections: self.connections.effective(),
            cluster: maybe(
                self.cluster.as_ref().map(cluster::effective),
                "off: every limit counts on this instance alone",
            ),
            rules: rules::effective(self.policy.rules.get(..profile_from).unwrap_or(&[])),
            bans,
            autoban,
            under_attack,
        };
        let yaml = serde_saphyr::to_string(&effective)?;
        Ok(format!(
            "# The effective config of {} (sekisho {}).\n\
             # Every key with the value sekisho runs with, defaults filled in; paths resolved.\n{yaml}",
            self.path.display(),
            env!("CARGO_PKG_VERSION"),
        ))
    }
}
