//! Micro-benchmarks of the registry's hot paths: hashing, manifest parsing, name parsing.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use storage::hash::Hasher;
use storage::{Algorithm, Digest, RepoName};

fn hashing(c: &mut Criterion) {
    let buf: Vec<u8> = (0..1024 * 1024).map(|i| (i * 31 % 251) as u8).collect();
    let mut g = c.benchmark_group("hash");
    g.throughput(Throughput::Bytes(buf.len() as u64));
    g.bench_function("sha256 1 MiB", |b| {
        b.iter(|| {
            let mut h = Hasher::new(Algorithm::Sha256);
            h.update(black_box(&buf));
            h.finish()
        })
    });
    g.bench_function("sha256 1 MiB in 64 KiB updates + save/restore each", |b| {
        b.iter_batched(
            || Hasher::new(Algorithm::Sha256),
            |mut h| {
                for chunk in buf.chunks(64 * 1024) {
                    h.update(black_box(chunk));
                    h = Hasher::restore(Algorithm::Sha256, &h.save()).expect("restore");
                }
                h.finish()
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn descriptor(media_type: &str, i: usize) -> String {
    format!(
        r#"{{"mediaType":"{media_type}","digest":"sha256:{i:064x}","size":{}}}"#,
        1000 + i
    )
}

fn manifests(c: &mut Criterion) {
    let layers: Vec<String> = (0..10)
        .map(|i| descriptor("application/vnd.oci.image.layer.v1.tar+gzip", i + 1))
        .collect();
    let image = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{},"layers":[{}],"annotations":{{"org.opencontainers.image.created":"2024-01-01T00:00:00Z"}}}}"#,
        descriptor("application/vnd.oci.image.config.v1+json", 0),
        layers.join(",")
    );
    let entries: Vec<String> = (0..8)
        .map(|i| {
            format!(
                r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{:064x}","size":1234,"platform":{{"architecture":"arch{i}","os":"linux"}}}}"#,
                i + 100
            )
        })
        .collect();
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{}]}}"#,
        entries.join(",")
    );
    // The inputs must be valid, or the benchmark would time the error path.
    storage::manifest::parse(image.as_bytes(), None).expect("image manifest parses");
    storage::manifest::parse(index.as_bytes(), None).expect("index parses");
    let mut g = c.benchmark_group("manifest::parse");
    g.throughput(Throughput::Bytes(image.len() as u64));
    g.bench_function("image manifest, 10 layers", |b| {
        b.iter(|| storage::manifest::parse(black_box(image.as_bytes()), None).expect("parse"))
    });
    g.throughput(Throughput::Bytes(index.len() as u64));
    g.bench_function("index, 8 manifests", |b| {
        b.iter(|| storage::manifest::parse(black_box(index.as_bytes()), None).expect("parse"))
    });
    g.finish();
}

fn names(c: &mut Criterion) {
    let digest = format!("sha256:{}", "ab".repeat(32));
    let name = "library/some-team/service_name.api";
    digest.parse::<Digest>().expect("valid digest");
    name.parse::<RepoName>().expect("valid name");
    let mut g = c.benchmark_group("parse");
    g.bench_function("Digest sha256", |b| {
        b.iter(|| {
            black_box(digest.as_str())
                .parse::<Digest>()
                .expect("digest")
        })
    });
    g.bench_function("RepoName 3 components", |b| {
        b.iter(|| black_box(name).parse::<RepoName>().expect("name"))
    });
    g.finish();
}

fn endpoints(c: &mut Criterion) {
    use http::Method;
    use registry::endpoint::Endpoint;
    let digest = format!("sha256:{}", "cd".repeat(32));
    let cases = [
        (
            "GET manifest by tag",
            Method::GET,
            "library/some-team/app/manifests/v1.2.3".to_owned(),
        ),
        (
            "HEAD blob",
            Method::HEAD,
            format!("library/some-team/app/blobs/{digest}"),
        ),
        (
            "PATCH upload",
            Method::PATCH,
            "library/some-team/app/blobs/uploads/0f1e2d3c4b5a69788796a5b4c3d2e1f0".to_owned(),
        ),
    ];
    let mut g = c.benchmark_group("Endpoint::parse");
    for (label, method, path) in &cases {
        Endpoint::parse(method, path).expect("valid endpoint");
        g.bench_function(*label, |b| {
            b.iter(|| Endpoint::parse(black_box(method), black_box(path)).expect("endpoint"))
        });
    }
    g.finish();
}

criterion_group!(benches, hashing, manifests, names, endpoints);
criterion_main!(benches);
