//! `rrr explain` checks shared by the tests of crashes (real bugs, LKDTM's, on both engines).

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

/// Runs `cmd`, which must succeed, and returns its stderr.
pub fn ok_said(cmd: &mut std::process::Command) -> String {
    let out = cmd.output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{cmd:?} failed:\n{said}");
    said
}
