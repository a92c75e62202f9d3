//! docs/rules.md lists every fact a condition can read, with its type.

use vigil_rules::facts::{FACTS, Type};

#[test]
fn every_fact_is_documented_with_its_type() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/rules.md");
    let docs = std::fs::read_to_string(path).unwrap_or_default();
    for f in FACTS {
        let ty = match f.ty {
            Type::Bool => "bool",
            Type::Int => "int",
            Type::String => "string",
            Type::StringList => "list(string)",
        };
        let row = format!("| `{}` | {ty} |", f.name);
        assert!(docs.contains(&row), "docs/rules.md has no row {row}");
    }
}
