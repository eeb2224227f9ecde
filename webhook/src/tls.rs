//! The serving certificate: loaded from files, re-read on an interval, and swapped only
//! when a new pair parses and matches. Re-reading by path (not inotify) follows the
//! kubelet's `..data` symlink swap of Secret volumes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
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
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem.cert)
        .filter_map(Result::ok)
        .collect();
    if chain.is_empty() {
        return Err(CertError::NoCertificate {
            path: cert_path.to_path_buf(),
        });
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

/// Serves the current certificate to every handshake.
#[derive(Debug)]
pub struct Reloading {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<CryptoProvider>,
    current: ArcSwap<CertifiedKey>,
    pem: std::sync::Mutex<Pem>,
    /// The serving certificate's notAfter, in seconds since the epoch (0: unknown).
    not_after: std::sync::atomic::AtomicI64,
}

/// notAfter of the first (leaf) certificate, in seconds since the epoch.
fn not_after(certified: &CertifiedKey) -> i64 {
    certified
        .cert
        .first()
        .and_then(|der| x509_parser::parse_x509_certificate(der.as_ref()).ok())
        .map_or(0, |(_, cert)| cert.validity().not_after.timestamp())
}

impl Reloading {
    /// Loads the pair once; a failure here is fatal (there is nothing to serve).
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
        Ok(Reloading {
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            provider,
            not_after: std::sync::atomic::AtomicI64::new(not_after(&certified)),
            current: ArcSwap::from_pointee(certified),
            pem: std::sync::Mutex::new(pem),
        })
    }

    /// Re-reads the files; swaps in a changed pair that parses and matches. Returns
    /// whether it swapped; a bad pair keeps the current one.
    pub fn reload(&self) -> Result<bool, CertError> {
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
        let certified = certified(&pem, &self.cert_path, &self.key_path, &self.provider)?;
        self.not_after
            .store(not_after(&certified), std::sync::atomic::Ordering::SeqCst);
        self.current.store(Arc::new(certified));
        *last = pem;
        Ok(true)
    }

    /// The serving certificate's notAfter (seconds since the epoch; 0 if unreadable).
    pub fn not_after(&self) -> i64 {
        self.not_after.load(std::sync::atomic::Ordering::SeqCst)
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
