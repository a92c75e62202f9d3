//! Replays every committed corpus file (`fuzz/corpus/<target>/`) and every
//! crash repro (`fuzz/regressions/<target>/`) through its target, so that
//! `cargo test` on stable keeps what fuzzing found and fixed.
//!
//! One test per target: the targets share engines within a process and
//! some assert on counters of their engine, so one target's inputs run in
//! order on one thread.

// Test code: a failed unwrap is a failed test. clippy.toml allows these in
// #[test] functions; this also covers the helpers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::path::{Path, PathBuf};

use vigil_fuzz_targets::TARGETS;

/// Targets that need the proxy crate (feature `proxy`, on by default; off in
/// `fuzz/run-all.sh --no-proxy`).
const PROXY_ONLY: [&str; 3] = ["config", "dbsc_proof", "paths"];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The files of `dir`, sorted; none when it does not exist.
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    out
}

fn replay(target: &str) {
    let (_, run) = TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .unwrap_or_else(|| panic!("no target {target}"));
    let corpus = files(&fuzz_dir().join("corpus").join(target));
    assert!(
        !corpus.is_empty(),
        "fuzz/corpus/{target}/ has no seeds: commit a minimised corpus"
    );
    let regressions = files(&fuzz_dir().join("regressions").join(target));
    for file in corpus.iter().chain(&regressions) {
        let data = fs::read(file).unwrap();
        // The file's name in the panic message says which input broke.
        eprintln!("{}", file.display());
        run(&data);
    }
}

#[cfg(feature = "proxy")]
#[test]
fn config() {
    replay("config");
}

#[cfg(feature = "proxy")]
#[test]
fn dbsc_proof() {
    replay("dbsc_proof");
}

#[test]
fn cookies() {
    replay("cookies");
}

#[test]
fn fleet_frames() {
    replay("fleet_frames");
}

#[test]
fn forwarded_headers() {
    replay("forwarded_headers");
}

#[test]
fn ja4() {
    replay("ja4");
}

#[cfg(feature = "proxy")]
#[test]
fn paths() {
    replay("paths");
}

#[test]
fn request_headers() {
    replay("request_headers");
}

#[test]
fn response_headers() {
    replay("response_headers");
}

#[test]
fn binding_seal() {
    replay("binding_seal");
}

#[test]
fn session_record() {
    replay("session_record");
}

/// Every cargo-fuzz binary has a body here, a test above and a corpus, and
/// the other way round: a target added in one place is added in all.
#[test]
fn every_target_is_wired() {
    let manifest = fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
    let bins: Vec<&str> = manifest
        .lines()
        .filter_map(|l| l.strip_prefix("name = \""))
        .filter_map(|l| l.strip_suffix('"'))
        .filter(|n| *n != "vigil-fuzz")
        .filter(|n| cfg!(feature = "proxy") || !PROXY_ONLY.contains(n))
        .collect();
    let mut names: Vec<&str> = TARGETS.iter().map(|(n, _)| *n).collect();
    let mut bins_sorted = bins.clone();
    bins_sorted.sort_unstable();
    names.sort_unstable();
    assert_eq!(
        bins_sorted, names,
        "fuzz/Cargo.toml [[bin]]s and TARGETS differ"
    );
    let this =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpora.rs")).unwrap();
    for name in names {
        assert!(
            this.contains(&format!("fn {name}()")),
            "no replay test for {name}"
        );
        let body =
            fs::read_to_string(fuzz_dir().join("fuzz_targets").join(format!("{name}.rs"))).unwrap();
        assert!(
            body.contains(&format!("vigil_fuzz_targets::{name}(")),
            "fuzz/fuzz_targets/{name}.rs does not call the library"
        );
    }
}
