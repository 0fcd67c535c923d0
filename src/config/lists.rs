//! `lists:`: the allow and deny CIDR lists, inline and in list files, reused across reloads
//! through the [`ListCache`](super::ListCache) when their inputs did not change.

use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_saphyr::Commented;

use super::cache::{Cached, Everything};
use super::{effective, Config, ConfigError, ConfigWarning, RawMode, Validator, S};
use crate::engine::Mode;
use crate::iplist::{self, IpSet};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLists {
    pub allow: Option<RawList>,
    pub deny: Option<RawList>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawList {
    #[serde(default)]
    pub cidrs: Vec<S<String>>,
    #[serde(default)]
    pub files: Vec<S<String>>,
    pub mode: Option<S<RawMode>>,
}

/// `lists:`, built.
pub(super) struct Lists {
    pub allow: Arc<IpSet>,
    pub deny: Arc<IpSet>,
    pub deny_mode: Mode,
    pub sources: ListSources,
}

/// What the allow and deny sets were built from: a set keeps only merged ranges, so the
/// entries and files are kept beside it for `sekisho config` and messages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListSources {
    /// `lists.allow`.
    pub allow: ListSource,
    /// `lists.deny`.
    pub deny: ListSource,
}

/// One list's inputs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListSource {
    /// `cidrs:`, parsed (a bare address as its /32 or /128).
    pub cidrs: Vec<IpNet>,
    /// `files:`, each resolved against the config's folder, with the entries it held.
    pub files: Vec<ListFile>,
}

/// One list file as loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListFile {
    /// The path it was read from.
    pub path: PathBuf,
    /// The entries it held.
    pub entries: usize,
}

/// `lists:` as `sekisho config` prints it.
#[derive(Serialize)]
pub(super) struct EffectiveLists {
    allow: EffectiveList,
    deny: EffectiveList,
}

#[derive(Serialize)]
struct EffectiveList {
    cidrs: Vec<String>,
    /// Each resolved path, with its entry count as a comment.
    files: Vec<Commented<String>>,
    mode: Commented<&'static str>,
}

impl ListSource {
    fn effective(&self, mode: Commented<&'static str>) -> EffectiveList {
        EffectiveList {
            cidrs: self.cidrs.iter().map(IpNet::to_string).collect(),
            files: (self.files.iter())
                .map(|f| {
                    let entries = match f.entries {
                        1 => "1 entry".to_string(),
                        n => format!("{n} entries"),
                    };
                    Commented(effective::path(&f.path), entries)
                })
                .collect(),
            mode,
        }
    }
}

/// `lists:` of `c`.
pub(super) fn effective(c: &Config) -> EffectiveLists {
    let s = &c.list_sources;
    EffectiveLists {
        allow: (s.allow).effective(Commented(
            "enforce",
            "the allow list has no count mode".into(),
        )),
        deny: (s.deny).effective(Commented(c.policy.deny_mode.as_str(), String::new())),
    }
}

impl Validator<'_> {
    /// `lists.allow` and `lists.deny`.
    pub(super) fn lists(&mut self, raw: Option<&RawLists>) -> Lists {
        let lists = raw;
        let (allow, allow_source) = self.list(lists.and_then(|l| l.allow.as_ref()), "lists.allow");
        if let Some(m) = lists
            .and_then(|l| l.allow.as_ref())
            .and_then(|a| a.mode.as_ref())
        {
            if m.value == RawMode::Count {
                self.err(
                    m,
                    "lists.allow.mode",
                    "the allow list has no count mode (only lists.deny has)",
                );
            }
        }
        let deny_raw = lists.and_then(|l| l.deny.as_ref());
        let (deny, deny_source) = self.list(deny_raw, "lists.deny");
        let deny_mode = deny_raw
            .and_then(|d| d.mode.as_ref())
            .map(|m| m.value.into())
            .unwrap_or_default();

        Lists {
            allow,
            deny,
            deny_mode,
            sources: ListSources {
                allow: allow_source,
                deny: deny_source,
            },
        }
    }

    fn list(&mut self, raw: Option<&RawList>, field: &str) -> (Arc<IpSet>, ListSource) {
        let Some(raw) = raw else {
            return (Arc::new(IpSet::default()), ListSource::default());
        };
        let mut source = ListSource::default();
        let errors_before = self.errors.len();
        let counted = raw.mode.as_ref().is_some_and(|m| m.value == RawMode::Count);
        // The set's inputs: inline entries and each file's content hash.
        let mut signature = std::hash::DefaultHasher::new();
        let mut nets: Vec<IpNet> = Vec::new();
        for (i, c) in raw.cidrs.iter().enumerate() {
            c.value.hash(&mut signature);
            match iplist::parse_net(&c.value) {
                Ok(n) => {
                    if n.prefix_len() == 0 {
                        self.warn(
                            c,
                            format!("{field}.cidrs[{i}]"),
                            covers_all(n, field, counted),
                        );
                    }
                    nets.push(n)
                }
                Err(m) => self.err(c, format!("{field}.cidrs[{i}]"), m),
            }
        }
        let mut file_nets: Vec<Arc<Vec<IpNet>>> = Vec::new();
        for (i, f) in raw.files.iter().enumerate() {
            let path = self.dir.join(&f.value);
            let fname = format!("{field}.files[{i}]");
            self.list_files.push(path.clone());
            match self.cache.file(&path) {
                Ok(Cached::Hit(n, hash, everything)) => {
                    (path.as_path(), hash).hash(&mut signature);
                    self.loaded_hashes.push((path.clone(), hash));
                    self.warn_everything_in_file(&path, &fname, &everything, field, counted);
                    source.files.push(ListFile {
                        path: path.clone(),
                        entries: n.len(),
                    });
                    file_nets.push(n);
                }
                Ok(Cached::Miss(text, hash, stamp)) => {
                    (path.as_path(), hash).hash(&mut signature);
                    self.loaded_hashes.push((path.clone(), hash));
                    match iplist::parse_list(&text) {
                        Ok(n) => {
                            let everything: Arc<[Everything]> =
                                if n.iter().any(|n| n.prefix_len() == 0) {
                                    iplist::entries(&text)
                                        .filter_map(|(line, column, e)| {
                                            let n = iplist::parse_net(e).ok()?;
                                            (n.prefix_len() == 0).then_some((line, column, n))
                                        })
                                        .collect()
                                } else {
                                    Arc::new([])
                                };
                            self.warn_everything_in_file(
                                &path,
                                &fname,
                                &everything,
                                field,
                                counted,
                            );
                            let n = Arc::new(n);
                            source.files.push(ListFile {
                                path: path.clone(),
                                entries: n.len(),
                            });
                            self.cache.store(&path, stamp, hash, n.clone(), everything);
                            file_nets.push(n);
                        }
                        Err(errs) => {
                            for e in errs {
                                self.errors.push(ConfigError {
                                    file: path.clone(),
                                    line: e.line as u64,
                                    column: e.column as u64,
                                    field: fname.clone(),
                                    message: e.message,
                                });
                            }
                        }
                    }
                }
                Err(e) => self.err(
                    f,
                    fname,
                    format!("cannot read list file {}: {e}", path.display()),
                ),
            }
        }
        if self.errors.len() > errors_before {
            return (Arc::new(IpSet::default()), source);
        }
        source.cidrs.clone_from(&nets);
        let signature = signature.finish();
        if let Some(set) = self.cache.set(field, signature) {
            return (set, source);
        }
        let total = nets.len() + file_nets.iter().map(|n| n.len()).sum::<usize>();
        let set = Arc::new(IpSet::new(
            nets.into_iter()
                .chain(file_nets.iter().flat_map(|n| n.iter().copied())),
        ));
        debug_assert_eq!(set.entries(), total);
        self.cache.store_set(field, signature, set.clone());
        (set, source)
    }

    /// Warns of each entry of the list file `path` that covers every address of its family.
    fn warn_everything_in_file(
        &mut self,
        path: &std::path::Path,
        fname: &str,
        everything: &[Everything],
        list: &str,
        counted: bool,
    ) {
        for &(line, column, n) in everything {
            self.warnings.push(ConfigWarning(ConfigError {
                file: path.to_path_buf(),
                line: line as u64,
                column: column as u64,
                field: fname.to_string(),
                message: covers_all(n, list, counted),
            }));
        }
    }
}

/// The warning for an entry `n` of `list` (`lists.allow` or `lists.deny`, `counted` when in
/// count mode) with prefix length 0.
fn covers_all(n: IpNet, list: &str, counted: bool) -> String {
    let family = match n {
        IpNet::V4(_) => "IPv4",
        IpNet::V6(_) => "IPv6",
    };
    let effect = if list == "lists.allow" {
        format!("every {family} client passes without rules, limits or bans")
    } else if counted {
        format!(
            "every {family} client would be refused (only counted while lists.deny.mode is count)"
        )
    } else {
        format!("every {family} client will be refused")
    };
    format!("{n} covers every {family} address: {effect}")
}
