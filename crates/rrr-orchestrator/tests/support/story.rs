//! `rrr explain` checks shared by the tests of real bugs and of LKDTM's crashes.

/// The recording `rrr run` said it made or found (`rrr: recording DIR (...)`), from its stderr.
pub fn recording_of(said: &str) -> String {
    said.lines()
        .find_map(|l| l.strip_prefix("rrr: recording ")?.split(" (").next())
        .unwrap_or_else(|| panic!("no recording named: {said}"))
        .to_owned()
}

/// `rrr explain REC --format json`, checked against docs/story.schema.json.
pub fn explained(rec: &str) -> serde_json::Value {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rrr"))
        .args(["explain", rec, "--format", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let story: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let schema: serde_json::Value =
        serde_json::from_str(include_str!("../../../../docs/story.schema.json")).unwrap();
    let errors: Vec<String> = jsonschema::validator_for(&schema)
        .unwrap()
        .iter_errors(&story)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:?}\n{story:#}");
    story
}
