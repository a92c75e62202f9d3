//! `vigil-corpus`: writes a generated evaluation corpus to a directory.
//!
//! ```sh
//! vigil-corpus --seed 1 --users 2000 --sessions-per-class 1000 --out /tmp/corpus
//! ```

use std::path::PathBuf;

use clap::Parser;
use vigil_eval::generate::{DEFAULT_START, GenerateConfig, generate};

/// Generate a labelled corpus of session traces (networks.json,
/// events.jsonl, manifest.json).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Seed of every random draw: a seed gives the same corpus.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Number of users.
    #[arg(long, default_value_t = 2000)]
    users: usize,
    /// Sessions of each scenario class other than the history.
    #[arg(long, default_value_t = 1000)]
    sessions_per_class: usize,
    /// Days of ordinary history before the scenarios.
    #[arg(long, default_value_t = 14)]
    history_days: u64,
    /// Start of the history (Unix seconds, 00:00 UTC of a Monday).
    #[arg(long, default_value_t = DEFAULT_START)]
    start: u64,
    /// Directory to write; created if missing, files replaced.
    #[arg(long)]
    out: PathBuf,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let config = GenerateConfig {
        seed: args.seed,
        users: args.users,
        sessions_per_class: args.sessions_per_class,
        history_days: args.history_days,
        start: args.start,
    };
    let (corpus, stats) = generate(&config);
    corpus.write_dir(&args.out)?;
    eprintln!(
        "wrote {} requests of {} sessions to {}",
        corpus.events.len(),
        stats.sessions.values().sum::<usize>(),
        args.out.display()
    );
    for (class, missing) in &stats.shortfall {
        eprintln!("warning: {class}: {missing} sessions short (too few eligible users)");
    }
    Ok(())
}
