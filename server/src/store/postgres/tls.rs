//! TLS to PostgreSQL: rustls (on aws-lc-rs, like the rest of Sigil) trusting
//! only the CA the operator configured.

use rustls::{ClientConfig, RootCertStore, pki_types::CertificateDer, pki_types::pem::PemObject as _};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::domain::port::StoreError;

/// A connector whose only trust anchors are the PEM certificates in `ca`.
pub(super) fn connector(ca: &[u8]) -> Result<MakeRustlsConnect, StoreError> {
    let invalid = |what: String| StoreError::Backend(format!("database CA: {what}"));
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca) {
        roots.add(cert.map_err(|e| invalid(e.to_string()))?).map_err(|e| invalid(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(invalid("no certificate found in the PEM file".into()));
    }
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let config = ClientConfig::builder_with_provider(provider.into())
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}
