//! Vigil's evaluation corpus: a documented scenario format, a seeded
//! generator of labelled session traces, and an offline evaluator that feeds
//! them straight into the engine (no network) and reports, per scenario
//! class, detection rate, false-positive rate and requests until detection.
//!
//! ```no_run
//! use vigil_eval::evaluate::{Options, evaluate_corpus};
//! use vigil_eval::generate::{GenerateConfig, generate};
//!
//! let (corpus, _stats) = generate(&GenerateConfig { users: 300, sessions_per_class: 150, ..GenerateConfig::default() });
//! let report = evaluate_corpus(&corpus, &Options::default())?;
//! println!("{}", report.table());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The format is documented in `loadtests/README.md` and the modelling
//! choices in `docs/evaluation.md`.

pub mod evaluate;
pub mod generate;
pub mod replay;
pub mod scenario;
