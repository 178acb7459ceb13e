//! Validation of real output against the shipped JSON Schema.
use serde_json::Value;

/// The schema file the tracer ships (and prints with `tracer schema`).
pub const SCHEMA: &str = include_str!("../../tracer/schema/records.v1.json");

/// Panics naming the record and the violation if any record breaks the schema.
pub fn validate(records: &[Value]) {
    let schema: Value = serde_json::from_str(SCHEMA).expect("schema is JSON");
    let validator = jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .expect("schema compiles");
    for r in records {
        let errors: Vec<String> = validator
            .iter_errors(r)
            .map(|e| format!("{e} at {}", e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "record violates the schema: {r}\n{}",
            errors.join("\n")
        );
    }
}
