//! `vigil-replay`: replays the labelled decisions a controller exported
//! (`vigil-controller export-labels`) under changed weights, thresholds or
//! rules, and reports per label how many would have changed action; with
//! `--suggest`, the weight changes the labels argue for
//! (`docs/evaluation.md`, Replaying labelled decisions).
//!
//! ```sh
//! vigil-replay labels.jsonl --scale country_changed=0.5
//! vigil-replay labels.jsonl --points new_country_for_user=10 --drop-rule block-tor
//! vigil-replay labels.jsonl --suggest
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;

use clap::Parser;
use vigil_engine::Action;
use vigil_eval::replay::{Setting, read_export, replay, suggest, suggestions_table};

/// Replay labelled decisions under a changed setting.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The export (JSON Lines) written by `vigil-controller export-labels`.
    export: PathBuf,
    /// The routes' threshold of medium risk, as deployed.
    #[arg(long, default_value_t = 30)]
    medium_at: u8,
    /// The routes' threshold of high risk, as deployed.
    #[arg(long, default_value_t = 60)]
    high_at: u8,
    /// The action at low risk, as deployed.
    #[arg(long, default_value = "allow", value_parser = action)]
    low: Action,
    /// The action at medium risk, as deployed.
    #[arg(long, default_value = "step_up", value_parser = action)]
    medium: Action,
    /// The action at high risk, as deployed.
    #[arg(long, default_value = "block", value_parser = action)]
    high: Action,
    /// Changed: a reason's points times a factor, `CODE=FACTOR` (repeat).
    #[arg(long, value_parser = pair::<f64>)]
    scale: Vec<(String, f64)>,
    /// Changed: a reason's points replaced, `CODE=POINTS` (repeat).
    #[arg(long, value_parser = pair::<u8>)]
    points: Vec<(String, u8)>,
    /// Changed: the threshold of medium risk.
    #[arg(long)]
    new_medium_at: Option<u8>,
    /// Changed: the threshold of high risk.
    #[arg(long)]
    new_high_at: Option<u8>,
    /// Changed: a rule removed; the policy decides its decisions (repeat).
    #[arg(long)]
    drop_rule: Vec<String>,
    /// Changed: a rule's action, `NAME=ACTION` (repeat).
    #[arg(long, value_parser = rule_action)]
    rule_action: Vec<(String, Action)>,
    /// Also report the weight changes the labels argue for.
    #[arg(long)]
    suggest: bool,
    /// Most decisions read.
    #[arg(long, default_value_t = 5_000_000)]
    max: usize,
    /// Changed decisions listed per label.
    #[arg(long, default_value_t = 10)]
    examples: usize,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
}

fn action(s: &str) -> Result<Action, String> {
    Action::from_str(s).map_err(|e| e.to_string())
}

fn pair<T: FromStr>(s: &str) -> Result<(String, T), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected NAME=VALUE"))?;
    let v = v
        .parse()
        .map_err(|_| format!("{s:?}: {v:?} is not a valid value"))?;
    Ok((k.to_owned(), v))
}

fn rule_action(s: &str) -> Result<(String, Action), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected NAME=ACTION"))?;
    Ok((k.to_owned(), action(v)?))
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vigil-replay: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let base = Setting {
        medium_at: args.medium_at,
        high_at: args.high_at,
        policy: [args.low, args.medium, args.high],
        ..Setting::default()
    };
    base.check()?;
    let mut changed = base.clone();
    changed.medium_at = args.new_medium_at.unwrap_or(base.medium_at);
    changed.high_at = args.new_high_at.unwrap_or(base.high_at);
    changed.scale = args.scale.iter().cloned().collect();
    changed.points = args.points.iter().cloned().collect();
    changed.drop_rules = args.drop_rule.iter().cloned().collect();
    changed.rule_actions = args.rule_action.iter().cloned().collect();
    changed.check()?;
    let file =
        std::fs::File::open(&args.export).map_err(|e| format!("{}: {e}", args.export.display()))?;
    let export = read_export(std::io::BufReader::new(file), args.max)
        .map_err(|e| format!("{}: {e}", args.export.display()))?;
    if !export.complete {
        eprintln!(
            "warning: the export was cut at its --max: older labelled decisions of the period are in it, newer ones are not"
        );
    }
    let report = replay(&export.decisions, &base, &changed, args.examples);
    let suggestions = args.suggest.then(|| suggest(&export.decisions, &base));
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "replay": report,
                "suggestions": suggestions,
            }))?
        );
    } else {
        print!("{}", report.table());
        if let Some(s) = &suggestions {
            println!();
            print!("{}", suggestions_table(s));
        }
    }
    Ok(())
}
