//! The request path's share of the access log: formatting one line (combined and JSON) into a
//! buffer. Queueing it is one bounded-channel send, measured with the decision log.

use std::hint::black_box;
use std::time::SystemTime;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sekisho::metrics::access_log::{format_line, Format, Record};

fn record() -> Record<'static> {
    Record {
        client: "203.0.113.7".parse().expect("address"),
        method: "GET",
        target: b"/search?q=checkpoint&page=2",
        proto: "HTTP/1.1",
        status: 200,
        bytes: 5120,
        upstream_nanos: Some(1_234_567),
        total_nanos: 1_456_789,
        decision: "allow",
        rule: "",
        host: "shop.example",
        referer: b"https://shop.example/",
        user_agent: b"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36",
        request_id: "5f0c3a9e1b7d44c20001000000000a3f",
    }
}

fn access_log(c: &mut Criterion) {
    let r = record();
    let at = SystemTime::now();
    let mut g = c.benchmark_group("access_log_line");
    g.throughput(Throughput::Elements(1));
    for (name, format) in [("combined", Format::Combined), ("json", Format::Json)] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut line = Vec::with_capacity(256);
                format_line(format, black_box(&r), at, &mut line);
                black_box(line)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, access_log);
criterion_main!(benches);
