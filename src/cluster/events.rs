//! Bans, unbans and the hand-set under-attack switch, shared by the fleet.
//!
//! Each is kept in the store (bans in a hash with a sorted set of when their history ends,
//! the switch in one key) and announced on the `events` stream. Every instance reads the
//! stream from where it left off at each sync, so a ban reaches all of them within about two
//! sync intervals; one that starts, or that finds the store wiped (its `epoch` changed), reads
//! the whole hash instead and publishes its own live bans again.

use redis::Value;

use super::store::EVENTS_MAXLEN;
use crate::defense::store::BanRecord;
use crate::defense::Setting;

/// What one instance tells the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A ban added (by autoban or by hand), as its record.
    Ban(BanRecord),
    /// The ban of this network lifted by hand.
    Unban(String),
    /// The under-attack switch set by hand.
    Attack {
        /// `on`, `off` or `auto`.
        setting: Setting,
        /// Who set it.
        by: String,
    },
}

/// Stores a ban unless the store holds one of the same network lasting at least as long;
/// announces it. `KEYS`: bans, ban_ends, events. `ARGV`: network, record, history end (Unix
/// s), ban end (Unix s), stream cap.
const PUT_BAN: &str = r#"
local old = redis.call('HGET', KEYS[1], ARGV[1])
if old then
  local ok, rec = pcall(cjson.decode, old)
  if ok and tonumber(rec['until']) and tonumber(rec['until']) >= tonumber(ARGV[4]) then return 0 end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], '*', 'type', 'ban', 'rec', ARGV[2])
return 1
"#;

/// Drops bans whose history ended and keeps at most `ARGV[2]` (the newest ends).
/// `KEYS`: bans, ban_ends. `ARGV`: now (Unix s), the most to keep.
pub const PRUNE_BANS: &str = r#"
local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
local over = redis.call('ZCARD', KEYS[2]) - #gone - tonumber(ARGV[2])
if over > 0 then
  local extra = redis.call('ZRANGE', KEYS[2], #gone, #gone + over - 1)
  for _, n in ipairs(extra) do table.insert(gone, n) end
end
for _, n in ipairs(gone) do
  redis.call('HDEL', KEYS[1], n)
  redis.call('ZREM', KEYS[2], n)
end
return #gone
"#;

/// The commands that publish `event` under `prefix`, appended to `pipe`; how many.
pub fn publish(pipe: &mut redis::Pipeline, prefix: &str, event: &Event) -> u64 {
    let bans = format!("{prefix}bans");
    let ends = format!("{prefix}ban_ends");
    let stream = format!("{prefix}events");
    match event {
        Event::Ban(rec) => {
            let json = serde_json::to_string(rec).unwrap_or_default();
            pipe.cmd("EVAL")
                .arg(PUT_BAN)
                .arg(3)
                .arg(&bans)
                .arg(&ends)
                .arg(&stream)
                .arg(&rec.net)
                .arg(json)
                .arg(rec.forget_at.max(rec.until))
                .arg(rec.until)
                .arg(EVENTS_MAXLEN);
            1
        }
        Event::Unban(net) => {
            pipe.cmd("HDEL").arg(&bans).arg(net);
            pipe.cmd("ZREM").arg(&ends).arg(net);
            announce(pipe, &stream, &[("type", "unban"), ("net", net)]);
            3
        }
        Event::Attack { setting, by } => {
            let json = serde_json::json!({ "setting": setting.as_str(), "by": by }).to_string();
            pipe.cmd("SET").arg(format!("{prefix}attack")).arg(&json);
            announce(
                pipe,
                &stream,
                &[
                    ("type", "attack"),
                    ("setting", setting.as_str()),
                    ("by", by),
                ],
            );
            2
        }
    }
}

/// Appends one entry of `fields` to the `events` stream (capped).
fn announce(pipe: &mut redis::Pipeline, stream: &str, fields: &[(&str, &str)]) {
    let cmd = pipe
        .cmd("XADD")
        .arg(stream)
        .arg("MAXLEN")
        .arg("~")
        .arg(EVENTS_MAXLEN)
        .arg("*");
    for (k, v) in fields {
        cmd.arg(*k).arg(*v);
    }
}

/// A string reply.
pub fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

/// The fields of one stream entry as (name, value) pairs.
fn fields(v: &Value) -> Vec<(String, String)> {
    let Value::Array(items) = v else {
        return Vec::new();
    };
    items
        .chunks(2)
        .filter_map(|p| Some((text(p.first()?)?, text(p.get(1)?)?)))
        .collect()
}

/// The entries of an `XRANGE` reply: (id, fields).
pub fn entries(reply: &Value) -> Vec<(String, Vec<(String, String)>)> {
    let Value::Array(items) = reply else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|e| match e {
            Value::Array(pair) => Some((text(pair.first()?)?, fields(pair.get(1)?))),
            _ => None,
        })
        .collect()
}

/// The event of one `events` entry; `None` for an entry this version does not know.
pub fn decode(fields: &[(String, String)]) -> Option<Event> {
    let get = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    match get("type")? {
        "ban" => serde_json::from_str(get("rec")?).ok().map(Event::Ban),
        "unban" => Some(Event::Unban(get("net")?.to_string())),
        "attack" => Some(Event::Attack {
            setting: Setting::parse(get("setting")?)?,
            by: get("by").unwrap_or("?").to_string(),
        }),
        _ => None,
    }
}

/// The ban records of an `HGETALL` reply of the `bans` hash.
pub fn records(reply: &Value) -> Vec<BanRecord> {
    match reply {
        Value::Array(items) => items
            .chunks(2)
            .filter_map(|p| serde_json::from_str(&text(p.get(1)?)?).ok())
            .collect(),
        Value::Map(pairs) => pairs
            .iter()
            .filter_map(|(_, v)| serde_json::from_str(&text(v)?).ok())
            .collect(),
        _ => Vec::new(),
    }
}

/// The switch in the `attack` key: (setting, who set it).
pub fn attack(reply: &Value) -> Option<(Setting, String)> {
    let v: serde_json::Value = serde_json::from_str(&text(reply)?).ok()?;
    Some((
        Setting::parse(v.get("setting")?.as_str()?)?,
        v.get("by")
            .and_then(|b| b.as_str())
            .unwrap_or("?")
            .to_string(),
    ))
}

/// `(instance, last heartbeat ms)` of a `ZRANGE ... WITHSCORES` reply.
pub fn members(reply: &Value) -> Vec<(String, u64)> {
    match reply {
        Value::Array(items) => items
            .chunks(2)
            .filter_map(|p| {
                let score = match p.get(1)? {
                    Value::Double(d) => *d as u64,
                    v => text(v)?.parse::<f64>().ok()? as u64,
                };
                Some((text(p.first()?)?, score))
            })
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn events_read_back_as_written() {
        let rec = BanRecord {
            net: "203.0.113.7/32".into(),
            since: 1,
            until: 2,
            forget_at: 3,
            strikes: 1,
            mode: "enforce".into(),
            source: "manual".into(),
            reason: "test".into(),
        };
        let json = serde_json::to_string(&rec).unwrap();
        let f = vec![
            ("type".to_string(), "ban".to_string()),
            ("rec".to_string(), json),
        ];
        assert_eq!(decode(&f), Some(Event::Ban(rec)));
        let f = vec![
            ("type".to_string(), "attack".to_string()),
            ("setting".to_string(), "on".to_string()),
            ("by".to_string(), "ops".to_string()),
        ];
        assert_eq!(
            decode(&f),
            Some(Event::Attack {
                setting: Setting::On,
                by: "ops".into()
            })
        );
        assert_eq!(decode(&[("type".to_string(), "later".to_string())]), None);
    }

    #[test]
    fn stream_entries_are_parsed() {
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("1-0"),
            Value::Array(vec![
                bulk("type"),
                bulk("unban"),
                bulk("net"),
                bulk("10.0.0.1/32"),
            ]),
        ])]);
        let e = entries(&reply);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].0, "1-0");
        assert_eq!(decode(&e[0].1), Some(Event::Unban("10.0.0.1/32".into())));
    }
}
