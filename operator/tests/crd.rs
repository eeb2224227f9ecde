//! The committed CRDs (the repository's and the chart's) are what the types generate.

#[test]
fn committed_crds_match_the_types() {
    let generated = operator::crd_yaml().expect("the CRD serializes");
    for file in [operator::CRD_FILE, operator::CHART_CRD_FILE] {
        let path = format!("{}/../{file}", env!("CARGO_MANIFEST_DIR"));
        let committed = std::fs::read_to_string(&path).expect("the CRD file");
        assert!(
            committed == generated,
            "{path} is stale: run `cargo run -p verifyfull-operator --bin crdgen`"
        );
    }
}
