//! Noticing file changes: a `notify` watch on the folders of the watched files (a watch on a
//! file itself misses rename-replace and symlink swaps), confirmed by file stamps and content
//! hashes, read through symlinks.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc::UnboundedSender;

use crate::config::{content_hash, FileStamp};

/// The watched files' last known stamps and content hashes, and the folder watches.
pub struct FileWatch {
    watcher: Option<notify::RecommendedWatcher>,
    folders: HashSet<PathBuf>,
    known: HashMap<PathBuf, Option<(FileStamp, u64)>>,
}

impl FileWatch {
    /// A file watch that sends `()` to `events` on any change in a watched folder, or only
    /// polls (through [`scan`](Self::scan)) when `events` is `None`.
    pub fn new(events: Option<UnboundedSender<()>>) -> Self {
        let watcher = events.and_then(|tx| {
            let handler = move |res: notify::Result<notify::Event>| match res {
                // Our own reads show up as access events: they change nothing.
                Ok(ev) if matches!(ev.kind, EventKind::Access(_)) => {}
                Ok(_) => {
                    let _ = tx.send(());
                }
                Err(e) => tracing::warn!("file watch error (the poll still runs): {e}"),
            };
            match notify::recommended_watcher(handler) {
                Ok(w) => Some(w),
                Err(e) => {
                    tracing::warn!("cannot watch files, polling only: {e}");
                    None
                }
            }
        });
        Self {
            watcher,
            folders: HashSet::new(),
            known: HashMap::new(),
        }
    }

    /// Watches the folders of `files`, and of what they link to.
    pub fn watch_folders(&mut self, files: &[PathBuf]) {
        let Some(w) = self.watcher.as_mut() else {
            return;
        };
        for f in files {
            let mut folders = vec![parent(f)];
            if let Ok(real) = std::fs::canonicalize(f) {
                folders.push(parent(&real));
            }
            for dir in folders {
                if self.folders.contains(&dir) {
                    continue;
                }
                match w.watch(&dir, RecursiveMode::NonRecursive) {
                    Ok(()) => {
                        tracing::debug!(folder = %dir.display(), "watching");
                        self.folders.insert(dir);
                    }
                    Err(e) => {
                        tracing::warn!(folder = %dir.display(), "cannot watch (the poll still runs): {e}")
                    }
                }
            }
        }
    }

    /// Compares `files` with what was last seen; returns those that changed (content, or
    /// appearing/disappearing). A file is read only if its stamp changed, or if `hash_all`.
    pub fn scan(&mut self, files: &[PathBuf], hash_all: bool) -> Vec<PathBuf> {
        let mut changed = Vec::new();
        for f in files {
            let stamp = FileStamp::of(f).ok();
            let before = self.known.get(f).copied();
            if !hash_all && before.is_some_and(|b| b.map(|(s, _)| s) == stamp) {
                continue;
            }
            let now = stamp.and_then(|s| std::fs::read(f).ok().map(|b| (s, content_hash(&b))));
            if before.flatten().map(|(_, h)| h) != now.map(|(_, h)| h) {
                changed.push(f.clone());
            }
            self.known.insert(f.clone(), now);
        }
        self.known.retain(|k, _| files.contains(k));
        changed
    }
}

impl FileWatch {
    /// The files of `hashes` (path, content hash) whose content, as last seen, is not that.
    pub fn differing(&self, hashes: &[(PathBuf, u64)]) -> Vec<PathBuf> {
        hashes
            .iter()
            .filter(|(f, hash)| self.known.get(f).copied().flatten().map(|(_, h)| h) != Some(*hash))
            .map(|(f, _)| f.clone())
            .collect()
    }

    /// Starts tracking files not seen before (e.g. named by a new config), and stops
    /// tracking files no longer named; changes to already tracked files are left for the next
    /// [`scan`](Self::scan).
    pub fn adopt(&mut self, files: &[PathBuf]) {
        for f in files {
            if !self.known.contains_key(f) {
                let now = FileStamp::of(f)
                    .ok()
                    .and_then(|s| std::fs::read(f).ok().map(|b| (s, content_hash(&b))));
                self.known.insert(f.clone(), now);
            }
        }
        self.known.retain(|k, _| files.contains(k));
    }
}

fn parent(f: &Path) -> PathBuf {
    match f.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_sees_content_changes_only() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.txt");
        std::fs::write(&a, "1\n").unwrap();
        let files = vec![a.clone()];
        let mut w = FileWatch::new(None);
        assert_eq!(w.scan(&files, false), vec![a.clone()]); // first sight
        assert!(w.scan(&files, false).is_empty());
        assert!(w.scan(&files, true).is_empty());
        // same content, new inode: stamp changed, content did not
        let tmp = dir.path().join("a.tmp");
        std::fs::write(&tmp, "1\n").unwrap();
        std::fs::rename(&tmp, &a).unwrap();
        assert!(w.scan(&files, false).is_empty());
        // new content by rename
        std::fs::write(&tmp, "2\n").unwrap();
        std::fs::rename(&tmp, &a).unwrap();
        assert_eq!(w.scan(&files, false), vec![a.clone()]);
        // removed, then back
        std::fs::remove_file(&a).unwrap();
        assert_eq!(w.scan(&files, false), vec![a.clone()]);
        std::fs::write(&a, "2\n").unwrap();
        assert_eq!(w.scan(&files, false), vec![a.clone()]);
    }

    #[test]
    fn files_are_compared_with_the_content_a_config_was_built_from() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.txt");
        std::fs::write(&a, "loaded\n").unwrap();
        let loaded = content_hash(b"loaded\n");
        let files = vec![a.clone()];
        // unchanged since it was loaded: nothing to do
        let mut w = FileWatch::new(None);
        w.scan(&files, true);
        assert!(w.differing(&[(a.clone(), loaded)]).is_empty());
        // changed after it was loaded, before the watch started: reported
        std::fs::write(&a, "newer\n").unwrap();
        let mut w = FileWatch::new(None);
        w.scan(&files, true);
        assert_eq!(w.differing(&[(a.clone(), loaded)]), files);
        // and what the scan saw is the baseline from then on
        assert!(w.scan(&files, false).is_empty());
        // a file that is gone differs too
        std::fs::remove_file(&a).unwrap();
        w.scan(&files, true);
        assert_eq!(w.differing(&[(a.clone(), loaded)]), files);
    }

    #[test]
    fn symlink_swaps_are_seen_through() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("v1")).unwrap();
        std::fs::create_dir(d.join("v2")).unwrap();
        std::fs::write(d.join("v1/deny.txt"), "10.0.0.1\n").unwrap();
        std::fs::write(d.join("v2/deny.txt"), "10.0.0.2\n").unwrap();
        std::os::unix::fs::symlink("v1", d.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/deny.txt", d.join("deny.txt")).unwrap();
        let files = vec![d.join("deny.txt")];
        let mut w = FileWatch::new(None);
        w.scan(&files, false);
        // Kubernetes-style: a new symlink renamed over ..data
        std::os::unix::fs::symlink("v2", d.join("..data_tmp")).unwrap();
        std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
        assert_eq!(w.scan(&files, false), files);
    }
}
