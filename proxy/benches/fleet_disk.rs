//! What the controller client's files cost: the on-disk event queue (one
//! `fsync` per group of events the consumer thread takes together) and the
//! applied-changes journal (one `fsync` per applied frame), and reading a
//! segment back at start. Numbers depend on the disk: run it on the kind
//! of volume `state_dir` is on.
#![allow(
    clippy::unwrap_used,
    reason = "bench set-up: a panic is a broken bench"
)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use vigil_fleet::{Change, NodeEvent, NodeEventKind, SessionId};
use vigil_proxy::fleet_sync::journal::{Entry, Journal};
use vigil_proxy::fleet_sync::queue::{Limits, Queue};
use vigil_proxy::fleet_sync::records::Codec;

fn event(i: u64) -> NodeEvent {
    NodeEvent {
        id: format!("0123456789abcdef-{i}"),
        kind: NodeEventKind::SessionRevoked {
            session: SessionId(i.to_le_bytes().repeat(2).try_into().unwrap()),
            user: None,
            reference: None,
            at: 1_700_000_000,
        },
    }
}

fn revoked(i: u64) -> Change {
    Change::SessionRevoked {
        session: SessionId(i.to_le_bytes().repeat(2).try_into().unwrap()),
        at: 1_700_000_000,
        vouched: true,
    }
}

fn limits() -> Limits {
    Limits {
        max_events: 1_000_000,
        max_bytes: 1 << 30,
        segment_bytes: 4 << 20,
    }
}

fn queue(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let (mut q, _) = Queue::open(&dir.path().join("q"), limits()).unwrap();
    let mut g = c.benchmark_group("fleet_queue");
    g.measurement_time(Duration::from_secs(5));
    let mut next = 0u64;
    for group in [1u64, 64] {
        g.bench_function(format!("group_of_{group}_durable"), |b| {
            b.iter(|| {
                for _ in 0..group {
                    next += 1;
                    q.push(event(next));
                }
                q.write().unwrap().unwrap().sync_data().unwrap();
            });
        });
    }
    // Sent: gone marks keep the files small between iterations.
    let (last, _) = q.batch(usize::MAX).unwrap();
    let _ = q.remove_through(last);
    g.finish();
}

fn journal(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let (mut j, _) = Journal::open(&dir.path().join("j"), [7; 32]).unwrap();
    let mut g = c.benchmark_group("fleet_journal");
    g.measurement_time(Duration::from_secs(5));
    let mut next = 0u64;
    for n in [1u64, 1000] {
        let changes: Vec<Change> = (0..n).map(revoked).collect();
        g.bench_function(format!("frame_of_{n}_durable"), |b| {
            b.iter(|| {
                next += n;
                j.append(&Entry::of(&changes, Some(next))).unwrap();
            });
            j.compact(next).unwrap();
        });
    }
    g.finish();
}

fn read_back(c: &mut Criterion) {
    let codec = Codec::checksum(64 * 1024);
    let mut segment = Vec::new();
    let mut n = 0u64;
    while segment.len() < 1 << 20 {
        n += 1;
        codec.encode(&serde_json::to_vec(&event(n)).unwrap(), &mut segment);
    }
    let mut g = c.benchmark_group("fleet_records");
    g.bench_function("decode_1_MiB_segment", |b| {
        b.iter_batched(
            || segment.clone(),
            |s| black_box(codec.decode(&s).records.len()),
            BatchSize::LargeInput,
        );
    });
    g.finish();
}

criterion_group!(benches, queue, journal, read_back);
criterion_main!(benches);
