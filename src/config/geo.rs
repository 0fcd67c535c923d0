//! `geo:`: where a client's country comes from (a country database, or a header from trusted
//! proxies). The database is loaded through the [`ListCache`](super::ListCache), so a reload
//! that did not touch it keeps the loaded one.

use std::path::PathBuf;
use std::sync::Arc;

use http::HeaderName;
use serde::{Deserialize, Serialize};
use serde_saphyr::Commented;

use super::effective::{self, maybe, Maybe};
use super::{Validator, S};
use crate::geo::GeoDb;

/// `geo:`: where a client's country comes from.
#[derive(Debug, Clone, Default)]
pub struct GeoSettings {
    /// `geo.database`, loaded.
    pub database: Option<Arc<GeoDb>>,
    /// `geo.database`'s path, resolved against the config's folder.
    pub database_path: Option<PathBuf>,
    /// `geo.header`: a country header believed from trusted proxies only.
    pub header: Option<HeaderName>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGeo {
    pub database: Option<S<String>>,
    pub header: Option<S<String>>,
}

/// `geo:` as `sekisho config` prints it.
#[derive(Serialize)]
pub(super) struct EffectiveGeo {
    /// The resolved path, with the database's type and build date as a comment.
    database: Maybe<String>,
    header: Maybe<String>,
}

impl GeoSettings {
    pub(super) fn effective(&self) -> EffectiveGeo {
        let database = match (&self.database_path, &self.database) {
            (Some(p), Some(db)) => Commented(
                Some(effective::path(p)),
                format!("{} built {}", db.database_type(), db.build_date()),
            ),
            (p, _) => maybe(p.as_deref().map(effective::path), "none"),
        };
        EffectiveGeo {
            database,
            header: maybe(self.header.as_ref().map(ToString::to_string), "none"),
        }
    }
}

impl Validator<'_> {
    pub(super) fn geo(&mut self, raw: Option<&RawGeo>) -> GeoSettings {
        let mut out = GeoSettings::default();
        let Some(raw) = raw else { return out };
        if let Some(d) = &raw.database {
            let path = self.dir.join(&d.value);
            match self.cache.geo(&path) {
                Ok((db, hash)) => {
                    // what the watcher compares with when it starts: a database swapped
                    // between this load and then is reloaded at once
                    self.loaded_hashes.push((path.clone(), hash));
                    out.database = Some(db);
                }
                Err(m) => self.err(d, "geo.database", m),
            }
            out.database_path = Some(path.clone());
            self.list_files.push(path);
        }
        if let Some(h) = &raw.header {
            match HeaderName::from_bytes(h.value.trim().as_bytes()) {
                Ok(n) => out.header = Some(n),
                Err(_) => self.err(
                    h,
                    "geo.header",
                    format!("{:?} is not a header name", h.value),
                ),
            }
        }
        out
    }
}
