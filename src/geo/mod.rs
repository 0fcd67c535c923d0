//! Country lookup: a MaxMind-format database, or a country header set by a trusted CDN.
//!
//! The database is read whole into memory at load (a country database is 5-10 MB) rather than
//! memory-mapped: a mapped file that is replaced or truncated under a running process can kill
//! it with SIGBUS, and mapping needs `unsafe`. Both record layouts in the wild are read:
//! GeoLite2/GeoIP2 Country (`country.iso_code`) and the ip-location-db layout
//! (`country_code`). A lookup does no I/O and allocates nothing.

use std::net::IpAddr;
use std::path::Path;

use serde::Deserialize;

use crate::engine::Country;

/// The attribution the licence of the database at `path` asks for, if it is one whose
/// licence does: DB-IP's free databases (CC BY 4.0), as shipped in `conf/geo/` and as their
/// files are named (`dbip-country.mmdb`, `dbip-country-lite-*.mmdb`). Their metadata does not
/// say who made them, so the file name is what tells.
pub fn attribution(path: &Path) -> Option<&'static str> {
    let name = path.file_name()?.to_str()?;
    name.to_ascii_lowercase()
        .starts_with("dbip-")
        .then_some("IP Geolocation by DB-IP (https://db-ip.com), CC BY 4.0")
}

/// A loaded country database.
pub struct GeoDb {
    reader: maxminddb::Reader<Vec<u8>>,
}

impl std::fmt::Debug for GeoDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeoDb")
            .field("database_type", &self.reader.metadata().database_type)
            .field("build_epoch", &self.reader.metadata().build_epoch)
            .finish()
    }
}

#[derive(Deserialize)]
struct Record<'a> {
    #[serde(borrow)]
    country: Option<GeoIp2Country<'a>>,
    country_code: Option<&'a str>,
}

#[derive(Deserialize)]
struct GeoIp2Country<'a> {
    iso_code: Option<&'a str>,
}

impl GeoDb {
    /// Reads the database at `path`. A file that is not a MaxMind database, or is truncated,
    /// is an error; so is one whose first lookups fail.
    pub fn open(path: &Path) -> Result<Self, String> {
        let bytes =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Self::from_bytes(bytes)
    }

    /// A database from its bytes.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, String> {
        let reader = maxminddb::Reader::from_source(bytes)
            .map_err(|e| format!("not a valid MaxMind database: {e}"))?;
        let db = Self { reader };
        // A truncated file can open and then fail on lookup: probe a few addresses now, so that
        // a broken file is rejected at load, not per request.
        for probe in [
            "1.1.1.1",
            "8.8.8.8",
            "203.0.113.1",
            "2001:4860::1",
            "2400:cb00::1",
        ] {
            if let Ok(ip) = probe.parse::<IpAddr>() {
                db.try_country(ip).map_err(|e| {
                    format!("the database is damaged (lookup of {probe} failed: {e})")
                })?;
            }
        }
        Ok(db)
    }

    fn try_country(&self, ip: IpAddr) -> Result<Option<Country>, maxminddb::MaxMindDbError> {
        let found = self.reader.lookup(ip)?;
        let Some(rec) = found.decode::<Record<'_>>()? else {
            return Ok(None);
        };
        let code = rec
            .country_code
            .or_else(|| rec.country.and_then(|c| c.iso_code));
        Ok(code.and_then(|c| Country::parse(c.as_bytes())))
    }

    /// The country of `ip`; [`Country::UNKNOWN`] if the database has none.
    pub fn country(&self, ip: IpAddr) -> Country {
        self.try_country(ip.to_canonical())
            .ok()
            .flatten()
            .unwrap_or(Country::UNKNOWN)
    }

    /// When the database was built (Unix seconds).
    pub fn build_epoch(&self) -> u64 {
        self.reader.metadata().build_epoch
    }

    /// The day the database was built, `YYYY-MM-DD` (UTC).
    pub fn build_date(&self) -> String {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(self.build_epoch());
        let mut s = humantime::format_rfc3339_seconds(t).to_string();
        s.truncate(10);
        s
    }

    /// The database's type, e.g. `GeoLite2-Country`.
    pub fn database_type(&self) -> &str {
        &self.reader.metadata().database_type
    }
}

/// A small database for tests: 1.0.16.0/20 JP and 2001:200::/32 JP, 8.8.8.0/24 US, in both
/// the GeoIP2 and the ip-location-db layouts.
#[cfg(test)]
pub(crate) fn test_fixture() -> Vec<u8> {
    use mmdb_writer::{Value, Writer};
    {
        let mut w = Writer::builder("Test-Country")
            .description(&[("en", "sekisho test fixture")])
            .build();
        let geoip2 =
            |c: &str| Value::map([("country", Value::map([("iso_code", Value::from(c))]))]);
        let iplocdb = |c: &str| Value::map([("country_code", Value::from(c))]);
        w.insert_value("1.0.16.0/20".parse::<ipnet::IpNet>().unwrap(), geoip2("JP"))
            .unwrap();
        w.insert_value("8.8.8.0/24".parse::<ipnet::IpNet>().unwrap(), iplocdb("US"))
            .unwrap();
        w.insert_value(
            "2001:200::/32".parse::<ipnet::IpNet>().unwrap(),
            iplocdb("JP"),
        )
        .unwrap();
        w.to_bytes().unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> Vec<u8> {
        test_fixture()
    }

    #[test]
    fn both_layouts_and_both_families() {
        let db = GeoDb::from_bytes(fixture()).unwrap();
        let c = |s: &str| db.country(s.parse().unwrap());
        assert_eq!(c("1.0.16.1"), Country(*b"JP"));
        assert_eq!(c("8.8.8.8"), Country(*b"US"));
        assert_eq!(c("::ffff:8.8.8.8"), Country(*b"US"));
        assert_eq!(c("2001:200::1"), Country(*b"JP"));
        assert_eq!(c("9.9.9.9"), Country::UNKNOWN);
        assert_eq!(c("127.0.0.1"), Country::UNKNOWN);
        assert_eq!(db.database_type(), "Test-Country");
    }

    #[test]
    fn only_db_ip_files_ask_for_attribution() {
        assert!(attribution(Path::new("/etc/sekisho/geo/dbip-country.mmdb")).is_some());
        assert!(attribution(Path::new("DBIP-country-lite-2026-06.mmdb")).is_some());
        assert_eq!(attribution(Path::new("GeoLite2-Country.mmdb")), None);
        assert_eq!(attribution(Path::new("/")), None);
    }

    #[test]
    fn the_build_date_is_a_utc_day() {
        let db = GeoDb::from_bytes(fixture()).unwrap();
        let d = db.build_date();
        assert_eq!((d.len(), &d[4..5], &d[7..8]), (10, "-", "-"), "{d}");
    }

    #[test]
    fn damaged_files_are_rejected() {
        let good = fixture();
        assert!(GeoDb::from_bytes(good[..good.len() / 2].to_vec()).is_err());
        assert!(GeoDb::from_bytes(vec![7u8; 4096]).is_err());
        assert!(GeoDb::from_bytes(Vec::new()).is_err());
    }

    #[test]
    fn the_bundled_database_loads() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/geo/dbip-country.mmdb");
        let db = GeoDb::open(&path).unwrap();
        assert_eq!(db.country("1.0.16.1".parse().unwrap()), Country(*b"JP"));
        assert_eq!(db.country("8.8.8.8".parse().unwrap()), Country(*b"US"));
        assert_eq!(db.country("127.0.0.1".parse().unwrap()), Country::UNKNOWN);
        // Whole networks the registration-country database it replaced placed elsewhere: a
        // Russian search engine's (as RS) and a Chinese public resolver (as US).
        assert_eq!(db.country("77.88.8.8".parse().unwrap()), Country(*b"RU"));
        assert_eq!(db.country("5.255.255.5".parse().unwrap()), Country(*b"RU"));
        assert_eq!(
            db.country("114.114.114.114".parse().unwrap()),
            Country(*b"CN")
        );
        assert_eq!(db.build_date().len(), 10);
        assert!(attribution(&path).is_some_and(|a| a.contains("DB-IP")));
        assert!(db.build_epoch() > 1_700_000_000);
    }
}
