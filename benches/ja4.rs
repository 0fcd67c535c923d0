//! The cost of the JA4 fingerprint, computed once per TLS connection: parsing the ClientHello
//! and hashing its parts. Two hellos: the specification's example, and a real one from this
//! machine's OpenSSL client (caught over a socket pair).

use std::io::Read;
use std::os::unix::net::UnixStream;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use sekisho::tls::ja4::{ja4, parse_record};

/// The first TLS record an OpenSSL client sends: its ClientHello.
fn openssl_hello() -> Vec<u8> {
    let (client, mut server) = UnixStream::pair().expect("socket pair");
    let talker = std::thread::spawn(move || {
        let mut b =
            openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls()).expect("connector");
        b.set_alpn_protos(b"\x02h2\x08http/1.1").expect("alpn");
        // fails once the other end closes: only its first flight matters
        let _ = b.build().connect("www.example.com", client);
    });
    let mut head = [0u8; 5];
    server.read_exact(&mut head).expect("record header");
    let len = usize::from(u16::from_be_bytes([head[3], head[4]]));
    let mut record = head.to_vec();
    record.resize(5 + len, 0);
    server.read_exact(&mut record[5..]).expect("record");
    drop(server);
    let _ = talker.join();
    record
}

fn bench(c: &mut Criterion) {
    let spec = include_bytes!("../fuzz/corpus/client_hello/ja4_spec.bin").to_vec();
    let real = openssl_hello();
    eprintln!(
        "openssl ClientHello: {} bytes, JA4 {}",
        real.len(),
        ja4(&parse_record(&real).expect("a ClientHello"))
    );
    let mut g = c.benchmark_group("ja4_per_connection");
    for (name, hello) in [("spec_example", &spec), ("openssl_client", &real)] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let h = parse_record(black_box(hello)).expect("parses");
                black_box(ja4(&h))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
