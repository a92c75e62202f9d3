//! Rebuilds the controller when a migration is added or changed:
//! `sqlx::migrate!` embeds `migrations/` at compile time, and Cargo does
//! not otherwise know that the crate depends on that directory.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
