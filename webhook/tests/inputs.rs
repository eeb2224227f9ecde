//! Bad and hostile objects, through `review`: an absurd object is an `invalid` answer that
//! names the cap it broke, and a mistyped secret never appears in any answer.

use policy::admission::Mode;
use proptest::prelude::*;
use serde_json::{Value, json};
use webhook::review::review;

mod common;

fn answer(body: &[u8]) -> (u16, Value) {
    let r = common::with_decider(None, |d| review(body, Mode::Enforce, d));
    let v = serde_json::from_slice(&r.body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&r.body).into_owned()));
    (r.status, v)
}

/// A Pod CREATE review whose object JSON is given as text (with `kind` last when asked).
fn review_of(object: &str) -> Vec<u8> {
    format!(
        r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{{"uid":"u-1","kind":{{"group":"","version":"v1","kind":"Pod"}},"namespace":"shop","operation":"CREATE","userInfo":{{"username":"dev"}},"object":{object}}}}}"#
    )
    .into_bytes()
}

fn pod(env: &str, kind_last: bool) -> String {
    let spec = format!(r#""spec":{{"containers":[{{"name":"app","env":[{env}]}}]}}"#);
    let head = r#""apiVersion":"v1","kind":"Pod","metadata":{"name":"p"}"#;
    if kind_last {
        format!("{{{spec},{head}}}")
    } else {
        format!("{{{head},{spec}}}")
    }
}

fn invalid_message(v: &Value) -> String {
    assert_eq!(v["response"]["allowed"], false, "{v}");
    assert_eq!(v["response"]["status"]["code"], 400, "{v}");
    v["response"]["status"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn absurd_objects_are_invalid_naming_the_cap() {
    let many = vec![r#"{"name":"A","value":"x"}"#; policy::MAX_ENV_PER_POD + 1].join(",");
    for kind_last in [false, true] {
        let (status, v) = answer(&review_of(&pod(&many, kind_last)));
        assert_eq!(status, 200);
        let m = invalid_message(&v);
        assert!(
            m.contains("more than 10000 env entries in one Pod spec"),
            "{m}"
        );
        assert!(m.contains("spec.containers[0].env"), "{m}");
    }
    let containers: Vec<String> = (0..=policy::MAX_CONTAINERS)
        .map(|i| format!(r#"{{"name":"c{i}"}}"#))
        .collect();
    let object = format!(
        r#"{{"apiVersion":"v1","kind":"Pod","spec":{{"containers":[{}]}}}}"#,
        containers.join(",")
    );
    let (_, v) = answer(&review_of(&object));
    assert!(invalid_message(&v).contains("more than 100 containers in one list"));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Numbers, floats and booleans where a string belongs: the answer says which type was
    /// found, where, and never the value.
    #[test]
    fn mistyped_secrets_never_appear_in_answers(
        digits in "[1-9][0-9]{11,19}",
        shape in 0usize..4,
        kind_last in any::<bool>(),
    ) {
        let scalar = match shape {
            0 => digits.clone(),
            1 => format!("-{digits}"),
            2 => format!("{digits}.25"),
            _ => format!("{digits}e2"),
        };
        let env = format!(r#"{{"name":"PGPASSWORD","value":{scalar}}}"#);
        let body = review_of(&pod(&env, kind_last));
        let (status, v) = answer(&body);
        prop_assert_eq!(status, 200);
        let m = invalid_message(&v);
        prop_assert!(m.contains("spec.containers[0].env[0].value"), "{}", m);
        prop_assert!(m.contains("line 1, column"), "{}", m);
        prop_assert!(m.contains("integer") || m.contains("floating point"), "{}", m);
        prop_assert!(!v.to_string().contains(&digits[..12]), "{}", v);
    }
}

#[test]
fn a_mistyped_value_in_a_review_names_its_type() {
    let (_, v) = answer(&review_of(&pod(
        r#"{"name":"PGPASSWORD","value":true}"#,
        false,
    )));
    let m = invalid_message(&v);
    assert!(m.contains("invalid type: boolean"), "{m}");
    let (_, v) = answer(&review_of(&pod(
        r#"{"name":"PGPASSWORD","value":{"nested":"918273645501918"}}"#,
        true,
    )));
    let m = invalid_message(&v);
    assert!(m.contains("invalid type: map"), "{m}");
    assert!(!json!(m).to_string().contains("918273645501918"));
}
