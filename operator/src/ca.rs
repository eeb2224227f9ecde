//! The CA source of a policy: read, checked (certificates only, never a private key), hashed.

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Api;
use policy::crd::{CaSource, KeyRef};

/// A checked CA bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    pub pem: String,
    pub hash: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("{kind} {namespace}/{name} does not exist")]
    Missing {
        kind: &'static str,
        namespace: String,
        name: String,
    },
    #[error("{kind} {namespace}/{name} has no key {key:?}")]
    NoKey {
        kind: &'static str,
        namespace: String,
        name: String,
        key: String,
    },
    #[error(
        "{kind} {namespace}/{name} key {key:?} contains a private key; only certificates are distributed"
    )]
    PrivateKey {
        kind: &'static str,
        namespace: String,
        name: String,
        key: String,
    },
    #[error("{kind} {namespace}/{name} key {key:?} holds no PEM certificate")]
    NotCertificate {
        kind: &'static str,
        namespace: String,
        name: String,
        key: String,
    },
    #[error("set exactly one of caSource.secret or caSource.configMap")]
    Ambiguous,
    #[error("reading the CA source: {0}")]
    Api(#[from] kube::Error),
}

impl CaError {
    /// The condition reason for it.
    pub fn reason(&self) -> &'static str {
        match self {
            CaError::Missing { .. } => "SourceMissing",
            CaError::Api(_) => "SourceUnreadable",
            _ => "SourceInvalid",
        }
    }
}

/// FNV-1a, 64 bits, hex: to tell bundles apart, not a security measure.
pub fn hash(text: &str) -> String {
    let h = text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    format!("{h:016x}")
}

/// Checks a value found in a source.
pub fn check(kind: &'static str, r: &KeyRef, value: Option<&str>) -> Result<Bundle, CaError> {
    let (namespace, name, key) = (r.namespace.clone(), r.name.clone(), r.key.clone());
    let Some(pem) = value else {
        return Err(CaError::NoKey {
            kind,
            namespace,
            name,
            key,
        });
    };
    if pem.contains("PRIVATE KEY") {
        return Err(CaError::PrivateKey {
            kind,
            namespace,
            name,
            key,
        });
    }
    if !pem.contains("-----BEGIN CERTIFICATE-----") {
        return Err(CaError::NotCertificate {
            kind,
            namespace,
            name,
            key,
        });
    }
    Ok(Bundle {
        pem: pem.to_string(),
        hash: hash(pem),
    })
}

/// Reads the source's key through the API.
pub async fn read(client: &kube::Client, source: &CaSource) -> Result<Bundle, CaError> {
    match (&source.secret, &source.config_map) {
        (Some(r), None) => {
            let api: Api<Secret> = Api::namespaced(client.clone(), &r.namespace);
            let s = api
                .get_opt(&r.name)
                .await?
                .ok_or_else(|| CaError::Missing {
                    kind: "Secret",
                    namespace: r.namespace.clone(),
                    name: r.name.clone(),
                })?;
            let value = s
                .data
                .as_ref()
                .and_then(|d| d.get(&r.key))
                .map(|b| String::from_utf8_lossy(&b.0).into_owned());
            check("Secret", r, value.as_deref())
        }
        (None, Some(r)) => {
            let api: Api<ConfigMap> = Api::namespaced(client.clone(), &r.namespace);
            let c = api
                .get_opt(&r.name)
                .await?
                .ok_or_else(|| CaError::Missing {
                    kind: "ConfigMap",
                    namespace: r.namespace.clone(),
                    name: r.name.clone(),
                })?;
            check(
                "ConfigMap",
                r,
                c.data
                    .as_ref()
                    .and_then(|d| d.get(&r.key))
                    .map(String::as_str),
            )
        }
        _ => Err(CaError::Ambiguous),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r() -> KeyRef {
        KeyRef {
            namespace: "ns".into(),
            name: "ca".into(),
            key: "ca.crt".into(),
        }
    }

    #[test]
    fn only_certificates_pass() {
        let cert = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        assert_eq!(check("Secret", &r(), Some(cert)).unwrap().hash, hash(cert));
        let with_key =
            format!("{cert}-----BEGIN EC PRIVATE KEY-----\nxx\n-----END EC PRIVATE KEY-----\n");
        let e = check("Secret", &r(), Some(&with_key)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Secret ns/ca key \"ca.crt\" contains a private key; only certificates are distributed"
        );
        assert!(!e.to_string().contains("xx"));
        assert_eq!(
            check("ConfigMap", &r(), Some("hello"))
                .unwrap_err()
                .reason(),
            "SourceInvalid"
        );
        assert!(matches!(
            check("Secret", &r(), None),
            Err(CaError::NoKey { .. })
        ));
        assert_ne!(hash("a"), hash("b"));
    }
}
