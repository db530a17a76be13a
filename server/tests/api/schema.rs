//! `schema.graphql` is the live schema: a drift fails here.

#[test]
fn committed_schema_matches_the_live_schema() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../schema.graphql");
    let committed = std::fs::read_to_string(&path).expect("schema.graphql at the repository root");
    let live = reelhouse::graphql::sdl();
    assert!(
        committed == live,
        "schema.graphql is out of date: run `make schema` and commit the result.\n--- live ---\n{live}"
    );
}

#[test]
fn export_schema_prints_the_committed_schema() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_reelhouse")).arg("export-schema").output().unwrap();
    assert!(output.status.success());
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../schema.graphql");
    assert_eq!(String::from_utf8(output.stdout).unwrap(), std::fs::read_to_string(path).unwrap());
}
