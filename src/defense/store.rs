//! The state file: bans (with their history) and a hand-set under-attack switch, as JSON.
//!
//! Written atomically: a temporary file in the same folder, `fsync`, `rename` over the old one,
//! `fsync` of the folder. A crash leaves either the old file or the new one, never a torn one.
//! Times are Unix seconds (the engine's monotonic clock does not survive a restart). A state
//! file that cannot be read is renamed aside (`bans.json.corrupt-UNIXTIME`) so the next save
//! does not overwrite the evidence, reported, and the proxy starts without it.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::attack::Setting;
use super::bans::{Ban, Source};
use crate::engine::Mode;
use crate::iplist::parse_net;
use crate::limiter::Nanos;

/// The file's layout version.
const VERSION: u32 = 1;

/// Why the state file could not be read, used or written.
///
/// Cheap to clone (the OS and JSON errors are shared), so the last one can be kept for
/// `/admin/status` and returned to the caller too.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The file exists but could not be read.
    #[error("{}: cannot read: {source}", .path.display())]
    Read {
        /// The state file.
        path: PathBuf,
        /// The OS error.
        source: Arc<io::Error>,
    },
    /// The file is JSON of a layout version this build does not read.
    #[error("{}: version {found} is not one this sekisho reads ({VERSION})", .path.display())]
    Version {
        /// The state file.
        path: PathBuf,
        /// The version the file says it is.
        found: u32,
    },
    /// The file is not a state file (not JSON, or not the right shape).
    #[error("{}:{line}:{column}: not a sekisho state file: {source}", .path.display())]
    Parse {
        /// The state file.
        path: PathBuf,
        /// Where the parser stopped (1-based; 0 when it has no position).
        line: usize,
        /// The column on that line.
        column: usize,
        /// What the parser said.
        source: Arc<serde_json::Error>,
    },
    /// Writing it (the temp file, the fsyncs or the rename) failed.
    #[error("cannot save {}: {source}", .path.display())]
    Write {
        /// The state file.
        path: PathBuf,
        /// The OS error.
        source: Arc<io::Error>,
    },
}

/// Why a state file entry does not stand for a ban.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BanRecordError {
    /// `net` is not an address or a CIDR.
    #[error("ban {net:?}: {reason}")]
    Net {
        /// The entry's `net`, as written.
        net: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `mode` is neither `enforce` nor `count`.
    #[error("ban {net:?}: mode {mode:?} is not enforce or count")]
    Mode {
        /// The entry's `net`.
        net: String,
        /// The entry's `mode`, as written.
        mode: String,
    },
}

/// One ban as written to the state file, the admin API and `bans export --format json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BanRecord {
    /// `203.0.113.7/32`, `2001:db8:1:2::/64`.
    pub net: String,
    /// When it was added (Unix seconds).
    pub since: u64,
    /// When it ends (Unix seconds).
    pub until: u64,
    /// Until when a new ban of the same key counts as a repeat (Unix seconds).
    pub forget_at: u64,
    /// Bans of this key in a row.
    pub strikes: u32,
    /// `enforce` or `count`.
    pub mode: String,
    /// `manual`, or the autoban policy's name.
    pub source: String,
    /// Why.
    pub reason: String,
}

/// The whole file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateFile {
    /// Layout version (1).
    pub version: u32,
    /// When it was written (Unix seconds).
    pub saved_at: u64,
    /// The under-attack switch, when an operator set it (`on`, `off`, `auto`).
    #[serde(default)]
    pub under_attack: Option<String>,
    /// Bans, live and remembered.
    #[serde(default)]
    pub bans: Vec<BanRecord>,
}

/// Converts between the engine's monotonic nanoseconds and Unix seconds, at one moment.
#[derive(Debug, Clone, Copy)]
pub struct Clocks {
    /// Monotonic now.
    pub mono: Nanos,
    /// Unix now, seconds.
    pub unix: u64,
}

impl Clocks {
    /// Unix seconds of a monotonic time (rounded up: a ban never ends early on a round trip).
    pub fn to_unix(&self, t: Nanos) -> u64 {
        if t >= self.mono {
            self.unix + (t - self.mono).div_ceil(1_000_000_000)
        } else {
            self.unix.saturating_sub((self.mono - t) / 1_000_000_000)
        }
    }

    /// The monotonic time of Unix seconds `t` (saturating at 0 for the past).
    pub fn to_mono(&self, t: u64) -> Nanos {
        if t >= self.unix {
            self.mono
                .saturating_add((t - self.unix).saturating_mul(1_000_000_000))
        } else {
            self.mono
                .saturating_sub((self.unix - t).saturating_mul(1_000_000_000))
        }
    }
}

impl BanRecord {
    /// The record of `ban`.
    pub fn of(ban: &Ban, clocks: &Clocks) -> Self {
        Self {
            net: ban.net.to_string(),
            since: ban.since_unix,
            until: clocks.to_unix(ban.until),
            forget_at: clocks.to_unix(ban.forget_at),
            strikes: ban.strikes,
            mode: ban.mode.as_str().into(),
            source: ban.source.name().into(),
            reason: ban.reason.clone(),
        }
    }

    /// The ban this record stands for; an error naming what is wrong.
    pub fn to_ban(&self, clocks: &Clocks) -> Result<Ban, BanRecordError> {
        let net = parse_net(&self.net).map_err(|reason| BanRecordError::Net {
            net: self.net.clone(),
            reason,
        })?;
        let mode = match self.mode.as_str() {
            "enforce" => Mode::Enforce,
            "count" => Mode::Count,
            m => {
                return Err(BanRecordError::Mode {
                    net: self.net.clone(),
                    mode: m.to_string(),
                })
            }
        };
        Ok(Ban {
            net,
            since_unix: self.since,
            until: clocks.to_mono(self.until),
            forget_at: clocks.to_mono(self.forget_at.max(self.until)),
            strikes: self.strikes.max(1),
            mode,
            source: match self.source.as_str() {
                "manual" => Source::Manual,
                p => Source::Policy(p.into()),
            },
            reason: self.reason.clone(),
        })
    }
}

/// Writes `state` to `path` atomically (temp file, fsync, rename, fsync of the folder).
pub fn save(path: &Path, state: &StateFile) -> Result<(), StoreError> {
    write(path, state).map_err(|e| StoreError::Write {
        path: path.to_path_buf(),
        source: Arc::new(e),
    })
}

fn write(path: &Path, state: &StateFile) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    fs::create_dir_all(&dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "bans.json".into());
    // pid and a counter: two writers never share a temp file (the caller also serialises).
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.tmp-{}-{n}", std::process::id()));
    let mut body = serde_json::to_vec_pretty(state).map_err(io::Error::other)?;
    body.push(b'\n');
    let written = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(&body)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        fs::File::open(&dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

/// What [`load`] found.
#[derive(Debug)]
pub enum Loaded {
    /// No file yet: a first start.
    Missing,
    /// The file, parsed.
    State(StateFile),
    /// The file could not be used; it was moved to `moved_to` (if that worked).
    Corrupt {
        /// What is wrong, with the file's name.
        error: StoreError,
        /// Where the unreadable file is now.
        moved_to: Option<PathBuf>,
    },
}

/// Reads the state file at `path` without touching it (for `sekisho bans`); `Err` only when
/// it exists but cannot be read.
pub fn read(path: &Path) -> Result<Loaded, StoreError> {
    let text = match fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Loaded::Missing),
        Err(e) => {
            return Err(StoreError::Read {
                path: path.to_path_buf(),
                source: Arc::new(e),
            })
        }
    };
    Ok(match serde_json::from_slice::<StateFile>(&text) {
        Ok(s) if s.version == VERSION => Loaded::State(s),
        Ok(s) => Loaded::Corrupt {
            error: StoreError::Version {
                path: path.to_path_buf(),
                found: s.version,
            },
            moved_to: None,
        },
        Err(e) => Loaded::Corrupt {
            error: StoreError::Parse {
                path: path.to_path_buf(),
                line: e.line(),
                column: e.column(),
                source: Arc::new(e),
            },
            moved_to: None,
        },
    })
}

/// Reads the state file at `path`; an unreadable one is moved aside (see the module docs).
pub fn load(path: &Path, now_unix: u64) -> Loaded {
    let error = match read(path) {
        Ok(Loaded::Corrupt { error, .. }) => error,
        Ok(loaded) => return loaded,
        Err(error) => {
            return Loaded::Corrupt {
                error,
                moved_to: None,
            }
        }
    };
    let aside = path.with_file_name(format!(
        "{}.corrupt-{now_unix}",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    ));
    let moved_to = fs::rename(path, &aside).ok().map(|_| aside);
    Loaded::Corrupt { error, moved_to }
}

/// A new state file's content.
pub fn snapshot(bans: &[Ban], under_attack: Option<Setting>, clocks: &Clocks) -> StateFile {
    StateFile {
        version: VERSION,
        saved_at: clocks.unix,
        under_attack: under_attack.map(|s| s.as_str().to_string()),
        bans: bans.iter().map(|b| BanRecord::of(b, clocks)).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Nanos = 1_000_000_000;

    fn ban(net: &str, until: Nanos) -> Ban {
        Ban {
            net: parse_net(net).expect("test net"),
            since_unix: 1_700_000_000,
            until,
            forget_at: until + 3600 * SEC,
            strikes: 2,
            mode: Mode::Enforce,
            source: Source::Policy("probers".into()),
            reason: "31 responses 404".into(),
        }
    }

    #[test]
    fn round_trip_keeps_every_field_across_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state").join("bans.json");
        let before = Clocks {
            mono: 500 * SEC,
            unix: 1_700_000_000,
        };
        let bans = vec![
            ban("203.0.113.7/32", 1100 * SEC),
            ban("2001:db8::/64", 600 * SEC),
        ];
        save(&path, &snapshot(&bans, Some(Setting::On), &before)).expect("save");
        // a restart: the monotonic clock starts over, Unix time moved on by 100 s
        let after = Clocks {
            mono: 2 * SEC,
            unix: 1_700_000_100,
        };
        let Loaded::State(s) = load(&path, after.unix) else {
            panic!("the file just written loads");
        };
        assert_eq!(s.under_attack.as_deref(), Some("on"));
        let back: Vec<Ban> = s
            .bans
            .iter()
            .map(|r| r.to_ban(&after).expect("valid record"))
            .collect();
        // 600 s left at save, 100 s passed: 500 s left
        assert_eq!(back[0].until, after.mono + 500 * SEC);
        assert_eq!(back[0].forget_at, after.mono + (500 + 3600) * SEC);
        assert_eq!(back[0].net, bans[0].net);
        assert_eq!(back[0].strikes, 2);
        assert_eq!(back[0].source, Source::Policy("probers".into()));
        assert_eq!(back[0].reason, bans[0].reason);
        // 100 s left at save: ended during the downtime
        assert!(!back[1].live(after.mono));
        // no temp file left behind
        let names: Vec<_> = fs::read_dir(path.parent().expect("parent"))
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("bans.json")]);
    }

    #[test]
    fn corrupt_file_is_reported_and_moved_aside() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bans.json");
        fs::write(&path, b"{\"version\": 1, \"bans\": [tru").expect("write");
        match load(&path, 42) {
            Loaded::Corrupt { error, moved_to } => {
                assert!(error.to_string().contains("bans.json:1:"), "{error}");
                assert_eq!(moved_to, Some(dir.path().join("bans.json.corrupt-42")));
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
        assert!(!path.exists());
        assert!(matches!(load(&path, 43), Loaded::Missing));
    }

    #[test]
    fn bad_record_names_the_entry() {
        let clocks = Clocks { mono: 0, unix: 0 };
        let r = BanRecord {
            net: "203.0.113.300".into(),
            since: 0,
            until: 10,
            forget_at: 10,
            strikes: 1,
            mode: "enforce".into(),
            source: "manual".into(),
            reason: String::new(),
        };
        let e = r.to_ban(&clocks).expect_err("bad address");
        assert!(e.to_string().contains("203.0.113.300"), "{e}");
    }

    #[test]
    fn errors_read_as_they_always_did() {
        let path = Path::new("/var/lib/sekisho/bans.json");
        let os = || Arc::new(io::Error::other("disk full"));
        let read = StoreError::Read {
            path: path.into(),
            source: os(),
        };
        assert_eq!(
            read.to_string(),
            "/var/lib/sekisho/bans.json: cannot read: disk full"
        );
        let version = StoreError::Version {
            path: path.into(),
            found: 7,
        };
        assert_eq!(
            version.to_string(),
            "/var/lib/sekisho/bans.json: version 7 is not one this sekisho reads (1)"
        );
        let e = serde_json::from_slice::<StateFile>(b"{\"version\": 1,\n \"bans\": [tru")
            .expect_err("torn");
        let parse = StoreError::Parse {
            path: path.into(),
            line: e.line(),
            column: e.column(),
            source: Arc::new(e),
        };
        assert_eq!(
            parse.to_string(),
            "/var/lib/sekisho/bans.json:2:13: not a sekisho state file: \
             EOF while parsing a value at line 2 column 13"
        );
        let write = StoreError::Write {
            path: path.into(),
            source: os(),
        };
        assert_eq!(
            write.to_string(),
            "cannot save /var/lib/sekisho/bans.json: disk full"
        );

        let record = |net: &str, mode: &str| BanRecord {
            net: net.into(),
            since: 0,
            until: 10,
            forget_at: 10,
            strikes: 1,
            mode: mode.into(),
            source: "manual".into(),
            reason: String::new(),
        };
        let clocks = Clocks { mono: 0, unix: 0 };
        let net = record("203.0.113.300", "enforce").to_ban(&clocks);
        assert_eq!(
            net.expect_err("bad address").to_string(),
            "ban \"203.0.113.300\": \"203.0.113.300\" is not an IP address or CIDR"
        );
        let mode = record("192.0.2.1/32", "block").to_ban(&clocks);
        assert_eq!(
            mode.expect_err("bad mode").to_string(),
            "ban \"192.0.2.1/32\": mode \"block\" is not enforce or count"
        );
    }
}
