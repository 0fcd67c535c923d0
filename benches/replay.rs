//! `sekisho replay`'s cost per log line: parsing each format (1000 generated lines of the
//! labelled synthetic traffic, written in that format), and the whole run for nginx combined
//! (read, parse, order, judge with the shipped config, count) from a file.

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use sekisho::replay::formats::{Format, Parser};
use sekisho::replay::run::{replay, Judge, Options};
use sekisho::replay::synth::{generate, write, Plan};

fn lines(format: &str, plan: &Plan) -> Vec<String> {
    let mut out = Vec::new();
    write(format, &generate(plan), &mut out).expect("write");
    String::from_utf8(out)
        .expect("utf8")
        .lines()
        .map(str::to_owned)
        .collect()
}

fn bench(c: &mut Criterion) {
    let plan = Plan {
        seconds: 20,
        browsers: 200,
        flood_rate: 20,
        ..Plan::default()
    };
    let mut g = c.benchmark_group("replay_parse");
    for (name, format) in [
        ("nginx", Format::Nginx),
        ("apache", Format::Apache),
        ("alb", Format::Alb),
        ("cloudfront", Format::CloudFront),
        ("aws-waf", Format::AwsWaf),
        ("caddy", Format::Caddy),
        ("sekisho", Format::Sekisho),
    ] {
        let all = lines(name, &plan);
        let batch: Vec<&String> = all.iter().take(1000).collect();
        g.throughput(Throughput::Elements(batch.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut p = Parser::new(format);
                let mut n = 0;
                for l in &batch {
                    if let Ok(Some(e)) = p.parse(l) {
                        n += e.status as usize;
                    }
                }
                black_box(n)
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("replay_end_to_end");
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("access.log");
    let all = lines(
        "nginx",
        &Plan {
            seconds: 200,
            ..plan
        },
    );
    std::fs::write(&log, all.join("\n") + "\n").expect("write log");
    let config = || {
        sekisho::config::load(
            std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/conf/sekisho.yaml")),
            &sekisho::engine::SlotRegistry::default(),
        )
        .expect("the shipped config")
    };
    g.throughput(Throughput::Elements(all.len() as u64));
    g.sample_size(10);
    g.bench_function("nginx_shipped_config", |b| {
        b.iter_batched(
            || vec![Judge::new(config(), false)],
            |mut judges| {
                let r = replay(
                    std::slice::from_ref(&log),
                    "nginx",
                    &mut judges,
                    &Options::default(),
                    |_, _| {},
                )
                .expect("replay");
                black_box(r.refused)
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
