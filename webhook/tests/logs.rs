//! The webhook's JSON logs name kinds and results, never an environment value.

use std::sync::{Arc, Mutex};

use policy::admission::Mode;
use serde_json::json;

mod common;

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn logs_never_carry_env_values() {
    let buffer = Buffer::default();
    let writer = buffer.clone();
    tracing_subscriber::fmt()
        .json()
        .with_writer(move || writer.clone())
        .init();
    let password = "Zq8-never-log-me-Zq8";
    let review = json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "u", "kind": {"group": "", "version": "v1", "kind": "Pod"}, "operation": "CREATE",
            "userInfo": {"username": "alice"},
            "object": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                "spec": {"containers": [{"name": "c", "env": [
                    {"name": "DATABASE_URL", "value": format!("postgres://u:{password}@db/app?sslmode=require")},
                    {"name": "PGPASSWORD", "value": password}]}]}}}
    });
    let reviewed = common::with_decider(None, |d| {
        webhook::review::review(review.to_string().as_bytes(), Mode::Enforce, d)
    });
    webhook::log_review(&reviewed, "enforce");
    assert_eq!(reviewed.result, "denied");
    assert!(!String::from_utf8_lossy(&reviewed.body).contains(password));
    let logged = String::from_utf8(buffer.0.lock().expect("buffer").clone()).expect("utf-8");
    let line: serde_json::Value =
        serde_json::from_str(logged.lines().next().expect("a log line")).expect("JSON log");
    assert_eq!(line["fields"]["result"], "denied");
    assert_eq!(line["fields"]["kind"], "Pod");
    assert!(!logged.contains(password), "{logged}");
}
