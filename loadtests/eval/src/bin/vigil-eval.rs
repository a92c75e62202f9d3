//! `vigil-eval`: evaluates a corpus against the engine and reports per
//! scenario class.
//!
//! ```sh
//! vigil-eval /tmp/corpus                 # a corpus written by vigil-corpus
//! vigil-eval --generate --seed 1 --check # generate in memory, evaluate, enforce targets
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use vigil_eval::evaluate::{Options, evaluate_corpus, evaluate_dir};
use vigil_eval::generate::{GenerateArgs, generate};

/// Feed a labelled corpus to Vigil's engine and report detection rate,
/// false-positive rate and requests until detection per scenario class.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Corpus directory (networks.json, events.jsonl). Not with --generate.
    #[arg(required_unless_present = "generate", conflicts_with = "generate")]
    corpus: Option<PathBuf>,
    /// Generate the corpus in memory instead of reading one.
    #[arg(long)]
    generate: bool,
    /// With --generate: the corpus to generate.
    #[command(flatten)]
    corpus_args: GenerateArgs,
    /// Print the report as JSON instead of tables.
    #[arg(long)]
    json: bool,
    /// Exit with status 1 when a target is missed.
    #[arg(long)]
    check: bool,
    /// Run the engine without the rotating binding (passive signals only).
    #[arg(long)]
    no_binding: bool,
    /// Session ids listed per class for misses and false positives.
    #[arg(long, default_value_t = 3)]
    examples: usize,
}

fn main() -> Result<ExitCode, Box<dyn std::error::Error>> {
    let args = Args::parse();
    let options = Options {
        examples: args.examples,
        binding: !args.no_binding,
    };
    let started = Instant::now();
    let report = match &args.corpus {
        Some(dir) => evaluate_dir(dir, &options)?,
        None => {
            let (corpus, stats) = generate(&args.corpus_args.config());
            for (class, missing) in &stats.shortfall {
                eprintln!("warning: {class}: {missing} sessions short (too few eligible users)");
            }
            evaluate_corpus(&corpus, &options)?
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    eprintln!(
        "evaluated {} requests in {:.1} s",
        report.events,
        started.elapsed().as_secs_f64()
    );
    if args.check && !report.passed() {
        for miss in report.misses() {
            eprintln!("target missed: {}", miss.name);
        }
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
