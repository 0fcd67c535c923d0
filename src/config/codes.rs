//! Names sekisho did not make up and must not accept blindly: ISO 3166-1 country codes and
//! HTTP methods. A rule on `country: [UK]` or `methods: [PSOT]` would load and never match;
//! here it is an error that says what was meant. The engine stays cheap
//! ([`Country::parse`] takes any two letters): the tables are read at load only.

use super::suggest;
use crate::engine::Country;

/// The ISO 3166-1 alpha-2 codes officially assigned (249), and `XK` (Kosovo: user-assigned in
/// ISO 3166, but what MaxMind and the CDNs return for it).
const COUNTRIES: &str = "\
AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ \
BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW BY BZ \
CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ \
DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR \
GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU \
ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ \
LA LB LC LI LK LR LS LT LU LV LY \
MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ \
NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA \
RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ \
TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ \
VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW XK";

/// Codes people write for a country whose ISO code is another.
const COUNTRY_HINTS: [(&str, &str); 2] = [
    ("UK", "the United Kingdom is GB"),
    ("EL", "Greece is GR (EL is the EU's code)"),
];

/// A country as written in the config: an assigned ISO 3166-1 alpha-2 code (any case), or
/// `??` for "no known country". `XX`, which CDNs send for an unknown country, is refused with
/// a pointer to `??`: sekisho reads a header's `XX` as unknown, so a rule on `XX` would never
/// match.
pub fn country(given: &str) -> Result<Country, String> {
    let s = given.trim();
    let up = s.to_ascii_uppercase();
    if s == "??" {
        return Ok(Country::UNKNOWN);
    }
    if up == "XX" {
        return Err(format!(
            "{given:?}: a CDN's XX (unknown country) is read as \"??\"; write \"??\""
        ));
    }
    let Some(code) = Country::parse(s.as_bytes()) else {
        return Err(format!(
            "{given:?} is not a two-letter country code (e.g. JP, US) or \"??\" for unknown"
        ));
    };
    if COUNTRIES.split(' ').any(|c| c == up) {
        return Ok(code);
    }
    Err(match COUNTRY_HINTS.iter().find(|(c, _)| *c == up) {
        Some((_, hint)) => format!("{given:?} is not an ISO 3166-1 country code: {hint}"),
        None => format!("{given:?} is not an assigned ISO 3166-1 country code"),
    })
}

/// The IANA HTTP Method Registry (RFC 9110 and the WebDAV and versioning methods of RFC 7237
/// and later), the common ones first (a did-you-mean picks the first of equally near ones).
/// Left out: `*` (reserved) and `PRI` (the HTTP/2 preface, never a request). Added: `QUERY`
/// (draft-ietf-httpbis-safe-method-w-body, sent by clients before its registration) and
/// `PURGE` (not registered, but the cache-purge method of Varnish, Fastly, nginx and Squid:
/// refusing it from outside is a rule people write).
const METHODS: [&str; 40] = [
    "GET",
    "HEAD",
    "POST",
    "PUT",
    "DELETE",
    "CONNECT",
    "OPTIONS",
    "TRACE",
    "PATCH",
    "QUERY",
    "PURGE",
    "ACL",
    "BASELINE-CONTROL",
    "BIND",
    "CHECKIN",
    "CHECKOUT",
    "COPY",
    "LABEL",
    "LINK",
    "LOCK",
    "MERGE",
    "MKACTIVITY",
    "MKCALENDAR",
    "MKCOL",
    "MKREDIRECTREF",
    "MKWORKSPACE",
    "MOVE",
    "ORDERPATCH",
    "PROPFIND",
    "PROPPATCH",
    "REBIND",
    "REPORT",
    "SEARCH",
    "UNBIND",
    "UNCHECKOUT",
    "UNLINK",
    "UNLOCK",
    "UPDATE",
    "UPDATEREDIRECTREF",
    "VERSION-CONTROL",
];

/// An HTTP method as written (any case), upper-cased; an unknown one is an error, with the
/// registered method it is a slip of, if one is near.
pub fn method(given: &str) -> Result<String, String> {
    let up = given.trim().to_ascii_uppercase();
    if METHODS.contains(&up.as_str()) {
        return Ok(up);
    }
    if up.is_empty() {
        return Err(format!("{given:?} is not an HTTP method (GET, POST, ...)"));
    }
    Err(match suggest::nearest(&up, METHODS) {
        Some(m) => format!("{given:?} is not an HTTP method: did you mean {m}?"),
        None => format!("{given:?} is not a registered HTTP method (GET, POST, ...)"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn countries() {
        assert_eq!(COUNTRIES.split(' ').count(), 250);
        assert_eq!(country("jp"), Ok(Country(*b"JP")));
        assert_eq!(country(" GB "), Ok(Country(*b"GB")));
        assert_eq!(country("XK"), Ok(Country(*b"XK")));
        assert_eq!(country("??"), Ok(Country::UNKNOWN));
        assert_eq!(
            country("UK").unwrap_err(),
            "\"UK\" is not an ISO 3166-1 country code: the United Kingdom is GB"
        );
        assert!(country("el").unwrap_err().contains("Greece is GR"));
        assert_eq!(
            country("ZZ").unwrap_err(),
            "\"ZZ\" is not an assigned ISO 3166-1 country code"
        );
        assert!(country("XX").unwrap_err().contains("write \"??\""));
        assert!(country("JPN").unwrap_err().contains("two-letter"));
        assert!(country("").unwrap_err().contains("two-letter"));
        // every code in the table is two upper-case letters, once
        let mut all: Vec<&str> = COUNTRIES.split(' ').collect();
        assert!(all
            .iter()
            .all(|c| c.len() == 2 && c.bytes().all(|b| b.is_ascii_uppercase())));
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 250);
    }

    #[test]
    fn methods() {
        assert_eq!(method("get"), Ok("GET".into()));
        assert_eq!(method("PROPFIND"), Ok("PROPFIND".into()));
        assert_eq!(method("version-control"), Ok("VERSION-CONTROL".into()));
        assert_eq!(method("PURGE"), Ok("PURGE".into()));
        assert_eq!(
            method("PSOT").unwrap_err(),
            "\"PSOT\" is not an HTTP method: did you mean POST?"
        );
        assert!(method("DELTE")
            .unwrap_err()
            .ends_with("did you mean DELETE?"));
        assert!(method("OPTOINS")
            .unwrap_err()
            .ends_with("did you mean OPTIONS?"));
        assert_eq!(
            method("BREW").unwrap_err(),
            "\"BREW\" is not a registered HTTP method (GET, POST, ...)"
        );
        assert!(method("").unwrap_err().ends_with("(GET, POST, ...)"));
        assert!(method("g3t").unwrap_err().ends_with("did you mean GET?"));
        assert!(method("a b")
            .unwrap_err()
            .contains("not a registered HTTP method"));
    }
}
