//! Computes the JA4 of one ClientHello many times, for counting
//! instructions per computation under callgrind: a count that a shared,
//! loaded machine does not disturb, where the `ja4/*` benches' times vary
//! with the load (docs/performance.md, "Resumption-stable JA4").
//!
//! ```text
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/examples/ja4_instructions both resumed 100000
//! ```
//!
//! The first argument is what is computed: `spec` (the JA4 alone), `both`
//! (the JA4 and its resumption-stable form in one pass, what the proxy
//! does) or `twice` (the two forms computed apart, as a naive
//! implementation would). The second is the hello: `full` (the engine's
//! Chrome test vector) or `resumed` (the same with padding, cookie,
//! early_data and pre_shared_key). The third is the count. Instructions per
//! computation: the difference of two runs' totals (`Collected`) over the
//! difference of their counts, so that start-up and parsing cancel out.

use std::error::Error;
use std::hint::black_box;

use vigil_engine::{ClientHello, Transport, ja4, ja4_both, ja4_stable};

/// The hello named `name` in the engine's JA4 test vectors.
fn vector(name: &str) -> Result<Vec<u8>, Box<dyn Error>> {
    let tests = include_str!("../src/ja4/tests.rs");
    let prefix = format!("const {name}: &str = \"");
    let hex = tests
        .lines()
        .find_map(|l| l.strip_prefix(&prefix)?.strip_suffix("\";"))
        .ok_or("no such vector")?;
    (0..hex.len())
        .step_by(2)
        .map(|i| Ok(u8::from_str_radix(hex.get(i..i + 2).ok_or("odd hex")?, 16)?))
        .collect()
}

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let what = args.next().unwrap_or_else(|| "both".to_owned());
    let hello = match args.next().as_deref() {
        Some("resumed") => vector("CHROME_RESUMED")?,
        _ => vector("CHROME")?,
    };
    let count: u64 = args.next().map_or(Ok(100_000), |a| a.parse())?;
    let hello = ClientHello::from_records(&hello)?;
    let tcp = Transport::Tcp;
    for _ in 0..count {
        match what.as_str() {
            "spec" => {
                black_box(ja4(black_box(&hello), tcp));
            }
            "twice" => {
                black_box(ja4(black_box(&hello), tcp));
                // ja4_stable alone is the one pass; the naive second
                // computation is what it does for the stable form.
                black_box(ja4_stable(black_box(&hello), tcp));
            }
            _ => {
                black_box(ja4_both(black_box(&hello), tcp));
            }
        }
    }
    Ok(())
}
