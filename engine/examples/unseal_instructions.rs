//! Opens one companion value many times, for counting instructions per
//! opening under callgrind: a count that a shared, loaded machine does not
//! disturb, where the `binding` bench's times vary with the load
//! (docs/performance.md, "Rotating binding").
//!
//! ```text
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/examples/unseal_instructions -- 3 100000
//! ```
//!
//! The first argument is the seal format (3, the current one; 2 and 1,
//! the seeds of the fuzz corpus made by earlier releases), the second the
//! number of openings. Instructions per opening: the difference of two
//! runs' totals (`Collected`) over the difference of their counts, so that
//! start-up cancels out.

use std::error::Error;
use std::hint::black_box;

use vigil_engine::binding::{SameSite, Scope, Seal, Sealer};
use vigil_engine::{SessionHashKey, SessionKey};

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let format: u8 = args.next().map_or(Ok(3), |a| a.parse())?;
    let count: u64 = args.next().map_or(Ok(100_000), |a| a.parse())?;
    // The fuzz target's key, which the corpus seeds are sealed under.
    let sealer = Sealer::new(&SessionHashKey::from_bytes([5; 32]), None);
    let value: Vec<u8> = match format {
        3 => sealer
            .seal(&Seal {
                session: SessionKey::from_bytes([7; 16]),
                generation: 3,
                nonce: 0x1234_5678,
                issued_at: 1_700_000_000,
                scope: Scope::of(None, None, SameSite::Lax),
            })
            .ok_or("no random source")?
            .into_bytes(),
        2 => include_bytes!("../../fuzz/corpus/binding_seal/seed-seal2-0").to_vec(),
        1 => include_bytes!("../../fuzz/corpus/binding_seal/seed-seal-0").to_vec(),
        _ => return Err("format: 1, 2 or 3".into()),
    };
    sealer
        .unseal(&value)
        .map_err(|e| format!("the format {format} value does not open: {e}"))?;
    for _ in 0..count {
        black_box(sealer.unseal(black_box(&value)).is_ok());
    }
    println!(
        "{count} openings of a {}-character format {format} value",
        value.len()
    );
    Ok(())
}
