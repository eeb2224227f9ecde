//! The committed CRD is what the types generate.

#[test]
fn committed_crd_matches_the_types() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../",
        "crds/postgrestlspolicies.verifyfull.dev.yaml"
    );
    let committed = std::fs::read_to_string(path).expect("crds/ holds the CRD");
    let generated = operator::crd_yaml().expect("the CRD serializes");
    assert!(
        committed == generated,
        "{path} is stale: run `cargo run -p verifyfull-operator --bin crdgen`"
    );
}
