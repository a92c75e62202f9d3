//! `vigil-corpus`: writes a generated evaluation corpus to a directory.
//!
//! ```sh
//! vigil-corpus --seed 1 --users 2000 --sessions-per-class 1000 --out /tmp/corpus
//! ```

use std::path::PathBuf;

use clap::Parser;
use vigil_eval::generate::{GenerateArgs, generate};

/// Generate a labelled corpus of session traces (networks.json,
/// events.jsonl, manifest.json).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    corpus: GenerateArgs,
    /// Directory to write; created if missing, files replaced.
    #[arg(long)]
    out: PathBuf,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let (corpus, stats) = generate(&args.corpus.config());
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
