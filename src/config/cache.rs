//! What a reload can keep from the last one: list files that did not change, and the CIDR sets
//! built from them.
//!
//! A file is recognised as unchanged by its stamp (device, inode, size, mtime, read through
//! symlinks) without being read; a file whose stamp changed is read and hashed, and parsed
//! only if its content changed. A set (allow or deny) whose inputs are all unchanged is reused
//! whole, so a reload that touches one list file reads and parses only that file.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ipnet::IpNet;

use crate::geo::GeoDb;
use crate::iplist::IpSet;

/// Identity of a file version without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
}

impl FileStamp {
    /// The stamp of `path`, following symlinks.
    pub fn of(path: &Path) -> std::io::Result<Self> {
        let m = std::fs::metadata(path)?;
        Ok(Self {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        })
    }
}

/// A content hash (stable within one process; used only to detect change).
pub fn content_hash(bytes: &[u8]) -> u64 {
    let mut h = foldhash::quality::FixedState::with_seed(0x5ec1_5400).build_hasher();
    bytes.len().hash(&mut h);
    bytes.hash(&mut h);
    h.finish()
}

#[derive(Debug)]
struct CachedFile {
    stamp: FileStamp,
    hash: u64,
    nets: Arc<Vec<IpNet>>,
    everything: Arc<[Everything]>,
}

/// A list-file entry that covers every address of its family (`0.0.0.0/0`, `::/0`): its
/// 1-based line and column and the network, kept for the warning each load repeats.
pub type Everything = (usize, usize, IpNet);

/// Parsed list files and built sets, kept across reloads.
#[derive(Debug, Default)]
pub struct ListCache {
    files: HashMap<PathBuf, CachedFile>,
    sets: HashMap<String, (u64, Arc<IpSet>)>,
    geo: Option<(PathBuf, FileStamp, u64, Arc<GeoDb>)>,
    /// List files read from disk since the cache was made (for tests and logs).
    pub files_read: u64,
    /// List files parsed since the cache was made.
    pub files_parsed: u64,
    /// Set once the proxy runs on a config loaded through this cache: later loads are reloads.
    running: bool,
}

/// What [`ListCache::file`] found.
pub enum Cached {
    /// Unchanged: here are its networks, content hash and entries covering a whole family.
    Hit(Arc<Vec<IpNet>>, u64, Arc<[Everything]>),
    /// Read, content hash, stamp: parse it and [`ListCache::store`] the result.
    Miss(String, u64, FileStamp),
}

impl ListCache {
    /// Looks `path` up: unchanged stamp or content → its networks; otherwise its text.
    pub fn file(&mut self, path: &Path) -> std::io::Result<Cached> {
        let stamp = FileStamp::of(path)?;
        if let Some(c) = self.files.get(path) {
            if c.stamp == stamp {
                return Ok(Cached::Hit(c.nets.clone(), c.hash, c.everything.clone()));
            }
        }
        let text = std::fs::read_to_string(path)?;
        self.files_read += 1;
        let hash = content_hash(text.as_bytes());
        if let Some(c) = self.files.get_mut(path) {
            if c.hash == hash {
                c.stamp = stamp;
                return Ok(Cached::Hit(c.nets.clone(), hash, c.everything.clone()));
            }
        }
        Ok(Cached::Miss(text, hash, stamp))
    }

    /// Remembers a file that parsed without error.
    pub fn store(
        &mut self,
        path: &Path,
        stamp: FileStamp,
        hash: u64,
        nets: Arc<Vec<IpNet>>,
        everything: Arc<[Everything]>,
    ) {
        self.files_parsed += 1;
        self.files.insert(
            path.to_path_buf(),
            CachedFile {
                stamp,
                hash,
                nets,
                everything,
            },
        );
    }

    /// The set built for `field` from inputs with this `signature`, if it is still the same.
    pub fn set(&self, field: &str, signature: u64) -> Option<Arc<IpSet>> {
        self.sets
            .get(field)
            .filter(|(s, _)| *s == signature)
            .map(|(_, set)| set.clone())
    }

    /// Remembers the set built for `field`.
    pub fn store_set(&mut self, field: &str, signature: u64, set: Arc<IpSet>) {
        self.sets.insert(field.to_string(), (signature, set));
    }

    /// Forgets one file (its content changed while its stamp did not).
    pub fn forget(&mut self, path: &Path) {
        self.files.remove(path);
        if self.geo.as_ref().is_some_and(|(p, _, _, _)| p == path) {
            self.geo = None;
        }
    }

    /// The country database at `path`: the loaded one if its stamp is unchanged, else read
    /// and checked anew.
    pub fn geo(&mut self, path: &Path) -> Result<(Arc<GeoDb>, u64), String> {
        let stamp =
            FileStamp::of(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if let Some((p, s, hash, db)) = &self.geo {
            if p == path && *s == stamp {
                return Ok((db.clone(), *hash));
            }
        }
        let bytes =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let hash = content_hash(&bytes);
        let db = Arc::new(GeoDb::from_bytes(bytes)?);
        self.files_read += 1;
        self.geo = Some((path.to_path_buf(), stamp, hash, db.clone()));
        Ok((db, hash))
    }

    /// Marks the loads from now on as reloads of a running proxy (see [`ListCache::running`]).
    pub fn set_running(&mut self) {
        self.running = true;
    }

    /// Whether loads through this cache are reloads of a running proxy: what only a start
    /// opens (the decision and access logs) is then not an error, the files being open.
    pub fn running(&self) -> bool {
        self.running
    }

    /// Makes the next load read and hash every file, whatever its stamp (an explicit reload
    /// asks for this); a file whose content is unchanged is still not parsed again.
    pub fn distrust_stamps(&mut self) {
        for f in self.files.values_mut() {
            f.stamp.len = u64::MAX;
        }
        self.geo = None;
    }
}
