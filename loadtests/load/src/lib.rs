//! `vigil-load`: a load generator for Vigil that plays the evaluation
//! corpus's sessions (`loadtests/eval`) against a running proxy — owners
//! logging in, browsing and roaming, thieves replaying their cookies from
//! other devices and networks — at a target rate (open loop, latency from
//! the intended send time) or a fixed concurrency, over HTTP/1.1 or HTTP/2,
//! cleartext or TLS with one TLS client configuration per simulated device.
//!
//! It reports throughput, latency percentiles (HDR histograms), errors by
//! kind, and per scenario class the detection figures read from Vigil's
//! answers ([`outcome`]), as text, JSON and a self-contained HTML page; it
//! can compare several targets in alternating rounds and hold a run to
//! thresholds ([`slo`]). The method is documented in `docs/load-testing.md`.

pub mod cpu;
pub mod html;
pub mod jar;
pub mod origin;
pub mod outcome;
pub mod pacer;
pub mod plan;
pub mod prepare;
pub mod report;
pub mod run;
pub mod schedule;
pub mod slo;
pub mod stats;
pub mod target;
pub mod tls;
