//! Files that `run` will write (the decision log, the ban state file): whether it can, checked
//! at load so that `sekisho check` finds what `run` would refuse. The checks look (metadata,
//! `access(2)`) and create nothing.

use std::io;
use std::path::Path;

use nix::unistd::{access, AccessFlags};

/// The folder `path` is in (`.` for a bare file name).
fn folder(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Why the folder of `path` is not one that exists (the reason only); `None` when it is.
pub fn missing_folder(path: &Path) -> Option<String> {
    let dir = folder(path);
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => None,
        Ok(_) => Some(format!("{} is not a folder", dir.display())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            Some(format!("the folder {} does not exist", dir.display()))
        }
        Err(e) => Some(format!("cannot look at the folder {}: {e}", dir.display())),
    }
}

/// Why `run` could not write `path` (the reason only: the caller names the file); `None` when
/// it can, as far as permissions tell. With
/// `append` (a log), an existing file is appended to and only it must be writable; otherwise
/// (or when it does not exist yet) the file is created or replaced by a rename in its folder,
/// which must be writable.
pub fn cannot_write(path: &Path, append: bool) -> Option<String> {
    if let Some(m) = missing_folder(path) {
        return Some(m);
    }
    let dir = folder(path);
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Some("it is a folder".into()),
        Ok(_) if append => access(path, AccessFlags::W_OK)
            .err()
            .map(|e| io::Error::from(e).to_string()),
        _ => access(dir, AccessFlags::W_OK | AccessFlags::X_OK)
            .err()
            .map(|e| {
                format!(
                    "cannot write in the folder {}: {}",
                    dir.display(),
                    io::Error::from(e)
                )
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_that_do_not_exist_or_are_files() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        assert_eq!(cannot_write(&d.join("x.log"), true), None);
        assert_eq!(missing_folder(&d.join("x.log")), None);
        assert_eq!(
            cannot_write(Path::new("x.log"), true),
            None,
            "the current folder"
        );
        let nowhere = d.join("no/such/x.log");
        assert_eq!(
            cannot_write(&nowhere, true),
            Some(format!(
                "the folder {} does not exist",
                d.join("no/such").display()
            ))
        );
        assert_eq!(missing_folder(&nowhere), cannot_write(&nowhere, false));
        std::fs::write(d.join("f"), "").unwrap();
        assert_eq!(
            cannot_write(&d.join("f/x.log"), true),
            Some(format!("{} is not a folder", d.join("f").display()))
        );
        std::fs::create_dir(d.join("sub")).unwrap();
        assert_eq!(
            cannot_write(&d.join("sub"), true),
            Some("it is a folder".into())
        );
    }

    #[test]
    fn a_folder_without_write_permission() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let ro = dir.path().join("ro");
        std::fs::create_dir(&ro).unwrap();
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
        if access(&ro, AccessFlags::W_OK).is_ok() {
            return; // root writes anywhere: nothing to see
        }
        assert_eq!(
            cannot_write(&ro.join("x.log"), true),
            Some(format!(
                "cannot write in the folder {}: Permission denied (os error 13)",
                ro.display()
            ))
        );
        // a log that exists and is writable is appended to: its folder may be read-only
        let log = dir.path().join("log");
        std::fs::create_dir(&log).unwrap();
        std::fs::write(log.join("d.log"), "").unwrap();
        std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o555)).unwrap();
        assert_eq!(cannot_write(&log.join("d.log"), true), None);
        assert!(
            cannot_write(&log.join("d.log"), false).is_some(),
            "replaced by a rename"
        );
        std::fs::set_permissions(log.join("d.log"), std::fs::Permissions::from_mode(0o444))
            .unwrap();
        assert_eq!(
            cannot_write(&log.join("d.log"), true).as_deref(),
            Some("Permission denied (os error 13)")
        );
    }
}
