//! An HTTP/2 client's frames, counted as they arrive, for the floods the h2 crate lets through
//! or only catches in bursts: Rapid Reset (CVE-2023-44487) paced slowly enough to stay under
//! the crate's count of pending resets, PING and SETTINGS floods (each answered by the server),
//! empty DATA frames, and CONTINUATION floods (CVE-2024-27316: endless empty CONTINUATION frames
//! that add nothing to the header list the crate measures). Pure: the bytes the client sent and
//! the time go in, a verdict comes out; the glue closes the connection on [`Abuse`].
//!
//! Each kind of frame spends from its own token bucket per connection (a burst, then a steady
//! rate); resets also count against the streams opened, so that a client whose streams are
//! mostly cancelled is cut even within the rate.

/// The client connection preface (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// A frame header: length (24 bits), type, flags, stream id.
const HEADER: usize = 9;

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const CONTINUATION: u8 = 0x9;

const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

/// Why a connection is cut; `as_str` is the `reason` label of
/// `sekisho_connections_closed_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abuse {
    /// Streams reset by the client faster than [`Budgets::resets`], or most of them.
    RapidReset,
    /// PING frames over [`Budgets::pings`].
    PingFlood,
    /// SETTINGS frames (not acknowledgements) over [`Budgets::settings`].
    SettingsFlood,
    /// DATA frames carrying nothing and not ending their stream, over [`Budgets::empty_data`].
    EmptyDataFlood,
    /// More than [`Budgets::continuations`] CONTINUATION frames in one header block.
    ContinuationFlood,
}

impl Abuse {
    /// Every reason, for metric series that start at 0.
    pub const ALL: [Abuse; 5] = [
        Abuse::RapidReset,
        Abuse::PingFlood,
        Abuse::SettingsFlood,
        Abuse::EmptyDataFlood,
        Abuse::ContinuationFlood,
    ];

    /// The name it is reported under (the decision log's `rule`): `http2.rapid_reset`, ...
    pub fn field(self) -> &'static str {
        match self {
            Abuse::RapidReset => "http2.rapid_reset",
            Abuse::PingFlood => "http2.ping_flood",
            Abuse::SettingsFlood => "http2.settings_flood",
            Abuse::EmptyDataFlood => "http2.empty_data_flood",
            Abuse::ContinuationFlood => "http2.continuation_flood",
        }
    }

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Abuse::RapidReset => "h2_rapid_reset",
            Abuse::PingFlood => "h2_ping_flood",
            Abuse::SettingsFlood => "h2_settings_flood",
            Abuse::EmptyDataFlood => "h2_empty_data_flood",
            Abuse::ContinuationFlood => "h2_continuation_flood",
        }
    }
}

/// Where a connection went over budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cut {
    pub abuse: Abuse,
    /// The offset in the bytes just fed where the offending frame's header starts; `None`
    /// when it started in earlier bytes.
    pub at: Option<usize>,
}

/// A burst, then `per_second`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub burst: u32,
    pub per_second: u32,
}

/// What one connection may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budgets {
    /// RST_STREAM frames. A browser cancels a few streams when the user navigates away; a
    /// Rapid Reset client cancels every one it opens, thousands a second.
    pub resets: Budget,
    /// Past this many resets, more than half of the streams opened being reset is abuse.
    pub resets_before_ratio: u32,
    pub pings: Budget,
    pub settings: Budget,
    pub empty_data: Budget,
    /// CONTINUATION frames in one header block.
    pub continuations: u32,
}

impl Default for Budgets {
    fn default() -> Self {
        Self {
            resets: Budget {
                burst: 200,
                per_second: 20,
            },
            resets_before_ratio: 100,
            pings: Budget {
                burst: 50,
                per_second: 5,
            },
            settings: Budget {
                burst: 20,
                per_second: 2,
            },
            empty_data: Budget {
                burst: 200,
                per_second: 20,
            },
            // what a 64 KiB header list needs in 16 KiB frames, with the h2 crate's margin
            continuations: 5,
        }
    }
}

/// One token bucket, in nanoseconds.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Tokens, scaled by 1e9 (token-nanoseconds).
    level: u128,
    at: u64,
}

impl Bucket {
    fn full(b: Budget, now: u64) -> Self {
        Self {
            level: u128::from(b.burst) * 1_000_000_000,
            at: now,
        }
    }

    /// Takes one token; false when there is none.
    fn take(&mut self, b: Budget, now: u64) -> bool {
        let cap = u128::from(b.burst) * 1_000_000_000;
        let elapsed = u128::from(now.saturating_sub(self.at));
        self.level = (self.level + elapsed * u128::from(b.per_second)).min(cap);
        self.at = now;
        if self.level < 1_000_000_000 {
            return false;
        }
        self.level -= 1_000_000_000;
        true
    }
}

/// The frames of one connection, read as they come (in any chunks).
#[derive(Debug)]
pub struct FrameMeter {
    budgets: Budgets,
    /// Preface bytes still to skip.
    preface: usize,
    head: [u8; HEADER],
    have: usize,
    /// Payload bytes of the current frame still to skip.
    payload: u32,
    /// CONTINUATION frames in the header block now open; `None` when none is open.
    block: Option<u32>,
    /// Frames read.
    frames: u64,
    streams: u64,
    resets: u64,
    reset_bucket: Bucket,
    ping_bucket: Bucket,
    settings_bucket: Bucket,
    empty_bucket: Bucket,
}

impl FrameMeter {
    /// A meter for a connection that starts at `now` (nanoseconds, any origin).
    pub fn new(budgets: Budgets, now: u64) -> Self {
        Self {
            budgets,
            preface: PREFACE.len(),
            head: [0; HEADER],
            have: 0,
            payload: 0,
            block: None,
            frames: 0,
            streams: 0,
            resets: 0,
            reset_bucket: Bucket::full(budgets.resets, now),
            ping_bucket: Bucket::full(budgets.pings, now),
            settings_bucket: Bucket::full(budgets.settings, now),
            empty_bucket: Bucket::full(budgets.empty_data, now),
        }
    }

    /// Whether the client has sent its preface and a first frame (its SETTINGS).
    pub fn started(&self) -> bool {
        self.frames > 0
    }

    /// Streams the client opened, and streams it reset, so far.
    pub fn counts(&self) -> (u64, u64) {
        (self.streams, self.resets)
    }

    /// Reads `bytes`, the next the client sent, at `now`.
    pub fn feed(&mut self, bytes: &[u8], now: u64) -> Result<(), Abuse> {
        self.feed_cut(bytes, now).map_err(|c| c.abuse)
    }

    /// [`feed`](Self::feed), telling where in `bytes` the frame over budget starts (when its
    /// header starts in `bytes`): what comes before it is whole frames, safe to pass on.
    pub fn feed_cut(&mut self, bytes: &[u8], now: u64) -> Result<(), Cut> {
        let mut at = 0;
        if self.preface > 0 {
            let n = self.preface.min(bytes.len());
            self.preface -= n;
            at = n;
        }
        while at < bytes.len() {
            if self.payload > 0 {
                let n = (self.payload as usize).min(bytes.len() - at);
                self.payload -= n as u32;
                at += n;
                continue;
            }
            let starts = (self.have == 0).then_some(at);
            let n = (HEADER - self.have).min(bytes.len() - at);
            self.head[self.have..self.have + n].copy_from_slice(&bytes[at..at + n]);
            self.have += n;
            at += n;
            if self.have < HEADER {
                break;
            }
            self.have = 0;
            let h = self.head;
            let len = u32::from_be_bytes([0, h[0], h[1], h[2]]);
            self.payload = len;
            self.frame(h[3], h[4], len, now)
                .map_err(|abuse| Cut { abuse, at: starts })?;
        }
        Ok(())
    }

    fn frame(&mut self, kind: u8, flags: u8, len: u32, now: u64) -> Result<(), Abuse> {
        let b = self.budgets;
        self.frames += 1;
        match kind {
            HEADERS => {
                self.streams += 1;
                self.block = (flags & END_HEADERS == 0).then_some(0);
            }
            CONTINUATION => {
                if let Some(n) = self.block.as_mut() {
                    *n += 1;
                    if *n > b.continuations {
                        return Err(Abuse::ContinuationFlood);
                    }
                }
                if flags & END_HEADERS != 0 {
                    self.block = None;
                }
            }
            RST_STREAM => {
                self.resets += 1;
                if !self.reset_bucket.take(b.resets, now) {
                    return Err(Abuse::RapidReset);
                }
                if self.resets > u64::from(b.resets_before_ratio) && self.resets * 2 > self.streams
                {
                    return Err(Abuse::RapidReset);
                }
            }
            PING if flags & ACK == 0 && !self.ping_bucket.take(b.pings, now) => {
                return Err(Abuse::PingFlood);
            }
            SETTINGS if flags & ACK == 0 && !self.settings_bucket.take(b.settings, now) => {
                return Err(Abuse::SettingsFlood);
            }
            DATA if len == 0
                && flags & END_STREAM == 0
                && !self.empty_bucket.take(b.empty_data, now) =>
            {
                return Err(Abuse::EmptyDataFlood);
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut f = len.to_be_bytes()[1..].to_vec();
        f.push(kind);
        f.push(flags);
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn meter() -> FrameMeter {
        let mut m = FrameMeter::new(Budgets::default(), 0);
        m.feed(PREFACE, 0).unwrap();
        m.feed(&frame(SETTINGS, 0, 0, &[0; 6]), 0).unwrap();
        m
    }

    #[test]
    fn a_browser_like_connection_passes_byte_by_byte() {
        let mut m = FrameMeter::new(Budgets::default(), 0);
        let mut wire = PREFACE.to_vec();
        wire.extend(frame(SETTINGS, 0, 0, &[0; 12]));
        for s in 0..300u32 {
            let id = 2 * s + 1;
            wire.extend(frame(HEADERS, END_HEADERS | END_STREAM, id, &[0x82; 20]));
            if s % 10 == 0 {
                wire.extend(frame(RST_STREAM, 0, id, &[0, 0, 0, 8]));
            }
        }
        wire.extend(frame(PING, 0, 0, &[0; 8]));
        for (i, b) in wire.iter().enumerate() {
            m.feed(std::slice::from_ref(b), i as u64 * MS).unwrap();
        }
        assert_eq!(m.counts(), (300, 30));
        assert!(m.started());
        let mut fresh = FrameMeter::new(Budgets::default(), 0);
        fresh.feed(&PREFACE[..10], 0).unwrap();
        assert!(!fresh.started());
    }

    #[test]
    fn rapid_reset_in_a_burst_and_paced_is_cut() {
        // burst: open and cancel as fast as possible
        let mut m = meter();
        let mut cut = None;
        for s in 0..1000u32 {
            let id = 2 * s + 1;
            let mut w = frame(HEADERS, END_HEADERS, id, &[0x82]);
            w.extend(frame(RST_STREAM, 0, id, &[0, 0, 0, 8]));
            if let Err(e) = m.feed(&w, 0) {
                cut = Some((e, s));
                break;
            }
        }
        assert_eq!(cut.map(|c| c.0), Some(Abuse::RapidReset));
        assert!(cut.is_some_and(|c| c.1 < 250), "{cut:?}");
        // paced: 20 a second, each opened and cancelled, under any burst counter
        let mut m = meter();
        let mut cut = None;
        for s in 0..2000u32 {
            let id = 2 * s + 1;
            let mut w = frame(HEADERS, END_HEADERS, id, &[0x82]);
            w.extend(frame(RST_STREAM, 0, id, &[0, 0, 0, 8]));
            if let Err(e) = m.feed(&w, u64::from(s) * 50 * MS) {
                cut = Some((e, s));
                break;
            }
        }
        assert_eq!(cut.map(|c| c.0), Some(Abuse::RapidReset), "paced resets");
        // most streams answered, a few cancelled, for long: never cut
        let mut m = meter();
        for s in 0..5000u32 {
            let id = 2 * s + 1;
            let mut w = frame(HEADERS, END_HEADERS | END_STREAM, id, &[0x82]);
            if s % 5 == 0 {
                w.extend(frame(RST_STREAM, 0, id, &[0, 0, 0, 8]));
            }
            m.feed(&w, u64::from(s) * 10 * MS).unwrap();
        }
    }

    #[test]
    fn ping_settings_and_empty_data_floods_are_cut_after_their_burst() {
        for (kind, flags, payload, abuse) in [
            (PING, 0, &[0u8; 8][..], Abuse::PingFlood),
            (SETTINGS, 0, &[][..], Abuse::SettingsFlood),
            (DATA, 0, &[][..], Abuse::EmptyDataFlood),
        ] {
            let mut m = meter();
            let mut sent = 0;
            let got = loop {
                sent += 1;
                if let Err(e) = m.feed(&frame(kind, flags, 1, payload), MS) {
                    break e;
                }
                assert!(sent < 10_000, "{abuse:?} never cut");
            };
            assert_eq!(got, abuse);
            // acknowledgements and data that carries bytes are not counted
            let mut m = meter();
            for _ in 0..10_000 {
                m.feed(&frame(kind, ACK, 1, payload), MS).unwrap();
                m.feed(&frame(DATA, 0, 1, b"x"), MS).unwrap();
            }
        }
    }

    #[test]
    fn a_cut_names_where_the_offending_frame_starts() {
        let mut m = meter();
        let mut wire = Vec::new();
        for _ in 0..50 {
            wire.extend(frame(PING, 0, 0, &[0; 8]));
        }
        let before = wire.len();
        wire.extend(frame(PING, 0, 0, &[0; 8]));
        wire.extend(frame(PING, 0, 0, &[0; 8]));
        let cut = m.feed_cut(&wire, 0).unwrap_err();
        assert_eq!(
            cut,
            Cut {
                abuse: Abuse::PingFlood,
                at: Some(before)
            }
        );
        // a header split over two reads: where it started is not in the second
        let mut m = meter();
        for _ in 0..50 {
            m.feed(&frame(PING, 0, 0, &[0; 8]), 0).unwrap();
        }
        let f = frame(PING, 0, 0, &[0; 8]);
        m.feed_cut(&f[..4], 0).unwrap();
        assert_eq!(m.feed_cut(&f[4..], 0).unwrap_err().at, None);
    }

    #[test]
    fn an_endless_header_block_is_cut() {
        let mut m = meter();
        m.feed(&frame(HEADERS, 0, 1, &[0x82]), 0).unwrap();
        let mut n = 0;
        let got = loop {
            n += 1;
            if let Err(e) = m.feed(&frame(CONTINUATION, 0, 1, &[]), 0) {
                break e;
            }
        };
        assert_eq!((got, n), (Abuse::ContinuationFlood, 6));
        // a block that ends in time is fine, as many times as it likes
        let mut m = meter();
        for s in 0..100u32 {
            m.feed(&frame(HEADERS, 0, 2 * s + 1, &[0x82]), 0).unwrap();
            for _ in 0..4 {
                m.feed(&frame(CONTINUATION, 0, 2 * s + 1, &[0x82]), 0)
                    .unwrap();
            }
            m.feed(&frame(CONTINUATION, END_HEADERS, 2 * s + 1, &[]), 0)
                .unwrap();
        }
    }
}
