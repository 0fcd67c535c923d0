//! The decision: a request's facts and the time go in, a [`Decision`] comes out.
//!
//! [`Policy::decide`] does no I/O and knows nothing of Pingora. Rules are evaluated in file
//! order: an allow-listed address passes without limits; a deny-listed address or a matching
//! `deny` rule is refused at once; every matching `limit` rule must admit the request
//! (all-must-pass) and the first that refuses answers. A refused request costs no tokens: tokens
//! taken by earlier rules are given back. A rule in `count` mode never refuses; the first one
//! that would have is reported in [`Decision::Count`].
//!
//! Mutable limiter state lives in a [`Limiter`] outside the policy, so that a reload keeps the
//! buckets of rules that did not change (see [`SlotRegistry`]).

mod path;
mod rule;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use http::HeaderMap;
use parking_lot::Mutex;
use smallvec::SmallVec;

pub use crate::iplist::ip_key;
use crate::iplist::IpSet;
use crate::limiter::{BucketKey, Limiter, Nanos, Predecessor, Quota};
pub use path::{decodes as path_decodes, normalize_path};
pub use rule::{HostMatch, KeyKind, LimitSpec, Matcher, Mismatch, Response, Rule, RuleKind, Scope};

/// `mode:` of a rule, a list, a ban or an autoban policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Refusals are sent.
    #[default]
    Enforce,
    /// Refusals are only counted and logged (shadow mode).
    Count,
}

impl Mode {
    /// `enforce` or `count`, as written in the config and in metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Count => "count",
        }
    }
}

/// The bans the engine checks before any rule. The engine sees only this: the local ban set
/// (`defense::BanSet`) implements it, and a set shared by a fleet can too.
pub trait Bans: Sync {
    /// The mode of the ban in force on `ip` at `now`, if any (`Enforce` wins over `Count`).
    /// The request path: no allocation, no I/O.
    fn check(&self, ip: IpAddr, now: Nanos) -> Option<Mode>;
}

/// Limits shared with other instances (`scope: cluster`). The engine sees only this: the
/// fleet sync implements it. The request path: atomics and one hash
/// lookup, no I/O.
pub trait Shared: Sync {
    /// The quota this instance enforces for a shared rule in `slot` now: the rule's own while
    /// the store answers, a local share of it (about `1 / live instances`) while it does not.
    fn quota(&self, slot: u32, spec: &LimitSpec) -> Quota;
    /// Whether exact rules can ask the store now (if not, they are judged like approximate
    /// ones, on the local share).
    fn exact_up(&self) -> bool;
    /// A token was taken from a shared bucket: the next sync tells the store.
    fn taken(&self, key: BucketKey);
    /// The token taken from `key` was given back (a later rule refused the request).
    fn refunded(&self, key: BucketKey);
}

/// What is known of one request when it is judged.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// The client address (after trusted-proxy resolution).
    pub ip: IpAddr,
    /// The request method, e.g. `GET`.
    pub method: &'a str,
    /// The host the request names, without port; empty if none.
    pub host: &'a str,
    /// The path, without the query string, normalised ([`normalize_path`]).
    pub path: &'a str,
    /// The `User-Agent` header, as bytes; empty if none.
    pub user_agent: &'a [u8],
    /// All request headers, for `key: header:NAME`.
    pub headers: Option<&'a HeaderMap>,
    /// The client's country ([`Country::UNKNOWN`] when not known or not looked up).
    pub country: Country,
    /// The client's TLS fingerprint (JA4); empty over plaintext or when its ClientHello could
    /// not be read.
    pub ja4: &'a str,
}

/// An ISO 3166-1 alpha-2 country code in upper case, or `??` for unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Country(pub [u8; 2]);

impl Country {
    /// Not known: no database, no entry, no trusted header.
    pub const UNKNOWN: Country = Country(*b"??");

    /// `jp` / `JP` → `JP`; `??` → unknown; anything else → `None`.
    pub fn parse(s: &[u8]) -> Option<Self> {
        match s {
            b"??" => Some(Self::UNKNOWN),
            [a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => {
                Some(Self([a.to_ascii_uppercase(), b.to_ascii_uppercase()]))
            }
            _ => None,
        }
    }

    /// As text.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("??")
    }
}

/// Which rule decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleRef {
    /// The allow list.
    AllowList,
    /// The deny list.
    DenyList,
    /// The ban set (autoban or by hand).
    Ban,
    /// `rules[i]` (the `under_attack.rules` profile follows the normal rules).
    Rule(u16),
}

/// The outcome of [`Policy::decide`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Pass to upstream.
    Allow,
    /// Pass to upstream without limits: the client is on the allow list.
    AllowListed,
    /// Pass to upstream, but the named `count`-mode rule would have refused it.
    Count { rule: RuleRef },
    /// Refuse: deny list or deny rule.
    Deny { rule: RuleRef },
    /// Refuse: a limit is exhausted; a token is back in `retry_after` whole seconds (at least 1).
    Limit { rule: RuleRef, retry_after: u32 },
}

impl Decision {
    /// Whether the request goes to upstream.
    pub fn passes(&self) -> bool {
        matches!(
            self,
            Decision::Allow | Decision::AllowListed | Decision::Count { .. }
        )
    }

    /// A short name for logs and metrics: `allow`, `deny`, `limit` or `count`.
    pub fn action(&self) -> &'static str {
        match self {
            Decision::Allow | Decision::AllowListed => "allow",
            Decision::Count { .. } => "count",
            Decision::Deny { .. } => "deny",
            Decision::Limit { .. } => "limit",
        }
    }
}

/// The compiled rules and lists: everything [`Policy::decide`] reads. Immutable once built.
#[derive(Debug)]
pub struct Policy {
    /// Addresses that pass without limits.
    pub allow: Arc<IpSet>,
    /// Addresses refused at once.
    pub deny: Arc<IpSet>,
    /// `lists.deny.mode`.
    pub deny_mode: Mode,
    /// What a deny-listed client is sent.
    pub deny_response: Response,
    /// The rules, in file order.
    pub rules: Vec<Rule>,
    /// IPv6 clients are keyed by this prefix length (IPv4 by the whole address).
    pub ipv6_prefix: u8,
    /// Whether some rule matches or keys on the country (the proxy looks it up only then).
    pub uses_country: bool,
    /// Whether some rule matches on the host (the proxy works it out only then).
    pub uses_host: bool,
    /// `rules[profile_from..]` are the `under_attack` profile: enforced while the switch is
    /// on, evaluated in shadow (previewed) while it is off.
    pub profile_from: usize,
}

/// The mutable state a decision reads besides the policy.
#[derive(Clone, Copy)]
pub struct Live<'a> {
    /// Token buckets.
    pub limiter: &'a Limiter,
    /// Bans, checked before any rule; `None`: no ban set.
    pub bans: Option<&'a dyn Bans>,
    /// Whether the under-attack profile is enforced.
    pub under_attack: bool,
    /// Limits shared with a fleet; `None`: every rule counts locally.
    pub shared: Option<&'a dyn Shared>,
}

/// A [`Decision`], and the profile rule that would have refused the request had the
/// under-attack switch been on (only while it is off and the request passed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// What is done.
    pub decision: Decision,
    /// What the under-attack profile would have done.
    pub preview: Option<RuleRef>,
    /// Exact cluster rules that admitted the request here and must still be asked of the store
    /// (`None` for almost every request): [`Pending::resolve`] gives the final decision.
    pub pending: Option<Box<Pending>>,
}

/// A bucket a token was taken from, to give back if a later rule refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Taken {
    key: BucketKey,
    quota: Quota,
    shared: bool,
}

/// One exact rule's question to the store: may `key` take a token of `quota`?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExactCheck {
    /// The rule.
    pub rule: RuleRef,
    /// Its bucket.
    pub key: BucketKey,
    /// Its quota.
    pub quota: Quota,
    /// Its mode.
    pub mode: Mode,
    /// Whether it is an under-attack profile rule judged in shadow (previewed).
    pub shadow: bool,
}

/// A decision waiting on the store's answers for exact rules ([`Verdict::pending`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// The questions, in rule order.
    pub checks: SmallVec<[ExactCheck; 2]>,
    /// The decision if the store admits every one.
    decision: Decision,
    preview: Option<RuleRef>,
    taken: SmallVec<[Taken; 8]>,
}

impl Pending {
    /// The final verdict from the store's answers (`answers[i]` for `checks[i]`: `Ok` admitted,
    /// `Err(wait)` refused). A refusal by an enforced rule gives back every token taken, here
    /// and (through `shared`) in the fleet's count; one by a count rule or a previewed one only
    /// marks the decision.
    pub fn resolve(
        self,
        answers: &[Result<(), Nanos>],
        limiter: &Limiter,
        shared: Option<&dyn Shared>,
    ) -> Verdict {
        let mut decision = self.decision;
        let mut preview = self.preview;
        for (check, answer) in self.checks.iter().zip(answers) {
            let Err(wait) = answer else { continue };
            match check.mode {
                _ if check.shadow => {
                    preview.get_or_insert(check.rule);
                }
                Mode::Enforce => {
                    give_back(&self.taken, limiter, shared);
                    return Verdict {
                        decision: Decision::Limit {
                            rule: check.rule,
                            retry_after: retry_after_secs(*wait),
                        },
                        preview: None,
                        pending: None,
                    };
                }
                Mode::Count => {
                    decision = match decision {
                        Decision::Count { rule } if earlier(rule, check.rule) => decision,
                        _ => Decision::Count { rule: check.rule },
                    };
                }
            }
        }
        Verdict {
            decision,
            preview,
            pending: None,
        }
    }
}

/// Whether `a` comes before `b` in judging order (lists and bans before rules).
fn earlier(a: RuleRef, b: RuleRef) -> bool {
    match (a, b) {
        (RuleRef::Rule(x), RuleRef::Rule(y)) => x < y,
        (RuleRef::Rule(_), _) => false,
        _ => true,
    }
}

/// Gives back the tokens of `taken`.
fn give_back(taken: &[Taken], limiter: &Limiter, shared: Option<&dyn Shared>) {
    for t in taken {
        limiter.refund(t.key, &t.quota);
        if t.shared {
            if let Some(s) = shared {
                s.refunded(t.key);
            }
        }
    }
}

impl Policy {
    /// Judges one request at `now`, taking tokens from `limiter`, with no bans and the
    /// under-attack switch off.
    pub fn decide(&self, facts: &Facts<'_>, limiter: &Limiter, now: Nanos) -> Decision {
        let live = Live {
            limiter,
            bans: None,
            under_attack: false,
            shared: None,
        };
        self.judge(facts, &live, now).decision
    }

    /// Judges one request at `now`: the allow list, then bans, the deny list, the rules in file
    /// order and, after them, the under-attack profile (enforced or previewed).
    pub fn judge(&self, facts: &Facts<'_>, live: &Live<'_>, now: Nanos) -> Verdict {
        let verdict = |decision| Verdict {
            decision,
            preview: None,
            pending: None,
        };
        if self.allow.contains(facts.ip) {
            return verdict(Decision::AllowListed);
        }
        let mut counted = None;
        if let Some(bans) = live.bans {
            match bans.check(facts.ip, now) {
                Some(Mode::Enforce) => return verdict(Decision::Deny { rule: RuleRef::Ban }),
                Some(Mode::Count) => counted = Some(RuleRef::Ban),
                None => {}
            }
        }
        if self.deny.contains(facts.ip) {
            match self.deny_mode {
                Mode::Enforce => {
                    return verdict(Decision::Deny {
                        rule: RuleRef::DenyList,
                    })
                }
                Mode::Count => {
                    counted.get_or_insert(RuleRef::DenyList);
                }
            }
        }
        let limiter = live.limiter;
        let mut preview = None;
        // Buckets a token was taken from, to give back if a later rule refuses.
        let mut taken: SmallVec<[Taken; 8]> = SmallVec::new();
        let mut exact: SmallVec<[ExactCheck; 2]> = SmallVec::new();
        for (i, rule) in self.rules.iter().enumerate() {
            let shadow = i >= self.profile_from && !live.under_attack;
            if shadow && preview.is_some() {
                break; // the preview names the first profile rule that would refuse
            }
            if !rule.matcher.matches(facts) {
                continue;
            }
            let this = RuleRef::Rule(i as u16);
            let refusal = match &rule.kind {
                RuleKind::Deny => Some(Decision::Deny { rule: this }),
                RuleKind::Limit(spec) => {
                    let key = BucketKey::new(rule.slot, self.key_of(spec, facts, limiter));
                    let shared = live.shared.filter(|_| spec.scope != Scope::Local);
                    let quota = shared.map_or(spec.quota, |s| s.quota(rule.slot, spec));
                    match limiter.acquire_after(key, &quota, now, rule.predecessor.as_ref()) {
                        Ok(()) => {
                            let asks =
                                shared.is_some_and(|s| spec.scope == Scope::Exact && s.exact_up());
                            if let Some(s) = shared {
                                if asks {
                                    exact.push(ExactCheck {
                                        rule: this,
                                        key,
                                        quota,
                                        mode: rule.mode,
                                        shadow,
                                    });
                                } else {
                                    s.taken(key);
                                }
                            }
                            taken.push(Taken {
                                key,
                                quota,
                                shared: shared.is_some() && !asks,
                            });
                            None
                        }
                        Err(wait) => Some(Decision::Limit {
                            rule: this,
                            retry_after: retry_after_secs(wait),
                        }),
                    }
                }
            };
            if let Some(refusal) = refusal {
                match rule.mode {
                    _ if shadow => preview = Some(this),
                    Mode::Enforce => {
                        give_back(&taken, limiter, live.shared);
                        return verdict(refusal);
                    }
                    Mode::Count => {
                        counted.get_or_insert(this);
                    }
                }
            }
        }
        let decision = match counted {
            Some(rule) => Decision::Count { rule },
            None => Decision::Allow,
        };
        let pending = (!exact.is_empty()).then(|| {
            Box::new(Pending {
                checks: exact,
                decision,
                preview,
                taken,
            })
        });
        Verdict {
            decision,
            preview,
            pending,
        }
    }

    /// The bucket a limit rule takes a request's token from, as [`judge`](Self::judge) finds
    /// it (`None` for a deny rule): to read it without taking from it (`sekisho explain`).
    pub fn bucket_of<'r>(
        &self,
        rule: &'r Rule,
        facts: &Facts<'_>,
        limiter: &Limiter,
    ) -> Option<(BucketKey, &'r LimitSpec)> {
        match &rule.kind {
            RuleKind::Limit(spec) => Some((
                BucketKey::new(rule.slot, self.key_of(spec, facts, limiter)),
                spec,
            )),
            RuleKind::Deny => None,
        }
    }

    /// The bucket key of a request under a limit.
    fn key_of(&self, spec: &LimitSpec, facts: &Facts<'_>, limiter: &Limiter) -> u128 {
        let ip = ip_key(facts.ip, self.ipv6_prefix);
        match &spec.key {
            KeyKind::Ip => ip,
            KeyKind::IpPath => limiter.hash_key(ip, facts.path.as_bytes()),
            KeyKind::Header(name) => match facts.headers.and_then(|h| h.get(name)) {
                Some(v) => limiter.hash_key(0, v.as_bytes()),
                // No such header: the client is keyed by its address.
                None => ip,
            },
            // One bucket per country (all unknown addresses share `??`).
            KeyKind::Country => u128::from(u16::from_be_bytes(facts.country.0)),
            // One bucket per TLS stack, whatever the address; none known: the address.
            KeyKind::Ja4 if facts.ja4.is_empty() => ip,
            KeyKind::Ja4 => limiter.hash_key(1, facts.ja4.as_bytes()),
        }
    }

    /// The rule a [`RuleRef`] names, if it is a rule.
    pub fn rule(&self, r: RuleRef) -> Option<&Rule> {
        match r {
            RuleRef::Rule(i) => self.rules.get(usize::from(i)),
            _ => None,
        }
    }

    /// The name of what decided, for logs and metrics.
    pub fn name_of(&self, r: RuleRef) -> &str {
        match r {
            RuleRef::AllowList => "allow-list",
            RuleRef::DenyList => "deny-list",
            RuleRef::Ban => "ban",
            RuleRef::Rule(_) => self.rule(r).map(|r| r.name.as_str()).unwrap_or("?"),
        }
    }

    /// What a refused request is sent.
    pub fn response_of(&self, r: RuleRef) -> &Response {
        self.rule(r)
            .map(|r| &r.response)
            .unwrap_or(&self.deny_response)
    }
}

/// Whole seconds until a token is back, rounded up, at least 1.
pub fn retry_after_secs(wait: Nanos) -> u32 {
    let secs = wait.div_ceil(1_000_000_000).max(1);
    u32::try_from(secs).unwrap_or(u32::MAX)
}

/// Gives each limit rule a limiter slot that outlives reloads.
///
/// A rule keeps its slot, and so its buckets, as long as its name, quota and key kind are the
/// same. A rule whose rate or burst changed gets a fresh slot whose buckets start from the old
/// slot's state (see [`Predecessor`]); a renamed rule, or one keyed differently, starts afresh.
/// Used at build time only, never per request.
#[derive(Debug, Default)]
pub struct SlotRegistry {
    slots: Mutex<SlotMap>,
}

#[derive(Debug, Default)]
struct SlotMap {
    /// Rule identity → slot.
    ids: HashMap<(String, Quota, KeyKind), u32>,
    next: u32,
    /// The limit rules of the policy now serving, by name.
    live: HashMap<String, (u32, Quota, KeyKind)>,
}

impl SlotRegistry {
    /// The slot of a limit rule, and the slot it inherits state from if its quota changed
    /// since the policy now serving.
    pub fn assign(&self, name: &str, spec: &LimitSpec) -> (u32, Option<Predecessor>) {
        let mut map = self.slots.lock();
        let id = (name.to_string(), spec.quota, spec.key.clone());
        let slot = match map.ids.get(&id) {
            Some(s) => *s,
            None => {
                let s = map.next;
                map.next += 1;
                map.ids.insert(id, s);
                s
            }
        };
        let predecessor = map
            .live
            .get(name)
            .filter(|(s, _, k)| *s != slot && *k == spec.key)
            .map(|(s, q, _)| Predecessor {
                slot: *s,
                quota: *q,
            });
        (slot, predecessor)
    }

    /// Records `policy` as the one serving: the next reload inherits from its slots.
    pub fn commit(&self, policy: &Policy) {
        let mut map = self.slots.lock();
        map.live = policy
            .rules
            .iter()
            .filter_map(|r| match &r.kind {
                RuleKind::Limit(spec) => {
                    Some((r.name.clone(), (r.slot, spec.quota, spec.key.clone())))
                }
                RuleKind::Deny => None,
            })
            .collect();
    }
}

#[cfg(test)]
mod tests;
