//! The serving certificate: loaded from files, re-read on an interval, and swapped only
//! when a new pair is whole — every certificate of the chain parses, the leaf matches the
//! key and is within its validity period. Otherwise the current pair stays, the reason is
//! logged and counted. Re-reading by path (not inotify) follows the kubelet's `..data`
//! symlink swap of Secret volumes. Readiness is off while the pair served is expired.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// Why a certificate pair could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path}: not a PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    BadKey { path: PathBuf },
    #[error("{path}: unsupported private key: {source}")]
    UnsupportedKey {
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("the private key does not match the certificate: {0}")]
    Mismatch(rustls::Error),
    #[error("{path}: certificate {index} of the chain is not a valid PEM block")]
    BadPem { path: PathBuf, index: usize },
    #[error("{path}: certificate {index} of the chain does not parse as X.509")]
    BadCertificate { path: PathBuf, index: usize },
    #[error("{path}: the certificate is not valid now (valid from {not_before} to {not_after})")]
    OutOfValidity {
        path: PathBuf,
        not_before: String,
        not_after: String,
    },
}

/// The files, as read: compared on every tick so an unchanged pair is not re-parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pem {
    cert: Vec<u8>,
    key: Vec<u8>,
}

fn read(path: &Path) -> Result<Vec<u8>, CertError> {
    std::fs::read(path).map_err(|source| CertError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn certified(
    pem: &Pem,
    cert_path: &Path,
    key_path: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, CertError> {
    let path = || cert_path.to_path_buf();
    let mut chain: Vec<CertificateDer<'static>> = Vec::new();
    for (index, block) in CertificateDer::pem_slice_iter(&pem.cert).enumerate() {
        let der = block.map_err(|_| CertError::BadPem {
            path: path(),
            index,
        })?;
        if x509_parser::parse_x509_certificate(der.as_ref()).is_err() {
            return Err(CertError::BadCertificate {
                path: path(),
                index,
            });
        }
        chain.push(der);
    }
    if chain.is_empty() {
        return Err(CertError::NoCertificate { path: path() });
    }
    let key = PrivateKeyDer::from_pem_slice(&pem.key).map_err(|_| CertError::BadKey {
        path: key_path.to_path_buf(),
    })?;
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|source| CertError::UnsupportedKey {
            path: key_path.to_path_buf(),
            source,
        })?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(CertError::Mismatch)?;
    Ok(certified)
}

/// The leaf's validity period, in seconds since the epoch.
fn validity(certified: &CertifiedKey) -> (i64, i64) {
    certified
        .cert
        .first()
        .and_then(|der| x509_parser::parse_x509_certificate(der.as_ref()).ok())
        .map_or((0, 0), |(_, cert)| {
            let v = cert.validity();
            (v.not_before.timestamp(), v.not_after.timestamp())
        })
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// A pair for a reload: whole, and valid now.
fn current_pair(
    pem: &Pem,
    cert_path: &Path,
    key_path: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, CertError> {
    let certified = certified(pem, cert_path, key_path, provider)?;
    let (not_before, not_after) = validity(&certified);
    let t = now();
    if t < not_before || t > not_after {
        let show = |s: i64| {
            jiff::Timestamp::from_second(s).map_or_else(|_| s.to_string(), |t| t.to_string())
        };
        return Err(CertError::OutOfValidity {
            path: cert_path.to_path_buf(),
            not_before: show(not_before),
            not_after: show(not_after),
        });
    }
    Ok(certified)
}

/// Serves the current certificate to every handshake.
#[derive(Debug)]
pub struct Reloading {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<CryptoProvider>,
    current: ArcSwap<CertifiedKey>,
    pem: std::sync::Mutex<Pem>,
    /// The serving certificate's notAfter, in seconds since the epoch (0: unknown).
    not_after: AtomicI64,
    not_before: AtomicI64,
    /// Reloads refused (a bad or out-of-date pair), and whether the last attempt was.
    pub failures: AtomicU64,
    pub failing: AtomicBool,
}

impl Reloading {
    /// Loads the pair once; a pair that is not whole is fatal (there is nothing to serve).
    /// An expired one is served, not ready, until a valid one replaces it.
    pub fn load(
        cert_path: &Path,
        key_path: &Path,
        provider: Arc<CryptoProvider>,
    ) -> Result<Reloading, CertError> {
        let pem = Pem {
            cert: read(cert_path)?,
            key: read(key_path)?,
        };
        let certified = certified(&pem, cert_path, key_path, &provider)?;
        let (not_before, not_after) = validity(&certified);
        Ok(Reloading {
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            provider,
            not_after: AtomicI64::new(not_after),
            not_before: AtomicI64::new(not_before),
            current: ArcSwap::from_pointee(certified),
            pem: std::sync::Mutex::new(pem),
            failures: AtomicU64::new(0),
            failing: AtomicBool::new(false),
        })
    }

    /// Re-reads the files; swaps in a changed pair that is whole and valid now. Returns
    /// whether it swapped; a bad pair keeps the current one (and is counted).
    pub fn reload(&self) -> Result<bool, CertError> {
        let result = self.try_reload();
        self.failing.store(result.is_err(), Ordering::SeqCst);
        if result.is_err() {
            self.failures.fetch_add(1, Ordering::SeqCst);
        }
        result
    }

    fn try_reload(&self) -> Result<bool, CertError> {
        let pem = Pem {
            cert: read(&self.cert_path)?,
            key: read(&self.key_path)?,
        };
        let mut last = self
            .pem
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *last == pem {
            return Ok(false);
        }
        let certified = current_pair(&pem, &self.cert_path, &self.key_path, &self.provider)?;
        let (not_before, not_after) = validity(&certified);
        self.not_before.store(not_before, Ordering::SeqCst);
        self.not_after.store(not_after, Ordering::SeqCst);
        self.current.store(Arc::new(certified));
        *last = pem;
        Ok(true)
    }

    /// The serving certificate's notAfter (seconds since the epoch; 0 if unreadable).
    pub fn not_after(&self) -> i64 {
        self.not_after.load(Ordering::SeqCst)
    }

    /// The certificate served is within its validity period now.
    pub fn valid_now(&self) -> bool {
        let t = now();
        self.not_before.load(Ordering::SeqCst) <= t && t <= self.not_after()
    }

    /// Re-reads on every tick until the task is dropped.
    pub async fn watch(self: Arc<Self>, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match self.reload() {
                Ok(true) => {
                    tracing::info!(cert = %self.cert_path.display(), "serving certificate reloaded")
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "serving certificate not reloaded; keeping the current one")
                }
            }
        }
    }
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// A TLS 1.2/1.3 server configuration over the reloading certificate, HTTP/1.1 only.
pub fn server_config(
    resolver: Arc<Reloading>,
    provider: Arc<CryptoProvider>,
) -> Result<rustls::ServerConfig, rustls::Error> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}
