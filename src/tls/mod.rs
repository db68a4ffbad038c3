//! Certificates and TLS server configurations for STARTTLS.
//!
//! Nothing is committed: at each start the farm makes a CA of its own with rcgen (or loads
//! one written earlier by `mxfarm ca DIR`), and for each host a certificate for its
//! hostname and listen address, good or broken as the host's `tls` mode says. Validity
//! dates are wall-clock dates, since that is what a client checks them against; farm time
//! (and `Farm::advance`) does not move them.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use time::{Duration as Span, OffsetDateTime};
use tokio_rustls::TlsAcceptor;

use crate::scenario::{Host, TlsMode, TlsVersions};

/// Why TLS material could not be made or loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot make a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("cannot read {path}: {source}\n  help: {help}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
        help: &'static str,
    },
    #[error("{path} holds no usable {what}\n  help: {help}")]
    Pem {
        path: PathBuf,
        what: &'static str,
        help: &'static str,
    },
    #[error(
        "cannot write {path}: {source}\n  help: check that the directory exists and is writable"
    )]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("host {host}: the TLS configuration is not usable: {source}")]
    Config { host: String, source: rustls::Error },
}

/// The file names `mxfarm ca DIR` writes and `mxfarm run --ca DIR` reads.
pub const CA_CERT_FILE: &str = "ca.pem";
pub const CA_KEY_FILE: &str = "ca-key.pem";

/// The farm's certificate authority: senders that trust it trust every `valid` host.
pub struct FarmCa {
    cert_pem: String,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for FarmCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FarmCa").finish_non_exhaustive()
    }
}

impl FarmCa {
    /// A new CA, valid from a day ago for ten years.
    pub fn generate() -> Result<Self, TlsError> {
        Self::generate_named("mxfarm test CA")
    }

    fn generate_named(name: &str) -> Result<Self, TlsError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        dn.push(DnType::OrganizationName, "mxfarm");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Span::days(1);
        params.not_after = now + Span::days(3650);
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads the CA that `mxfarm ca DIR` wrote.
    pub fn load(dir: &Path) -> Result<Self, TlsError> {
        let help = "write one with `mxfarm ca DIR` first";
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|source| TlsError::Read { path, source, help })
        };
        let cert_pem = read(CA_CERT_FILE)?;
        let key_pem = read(CA_KEY_FILE)?;
        let key = KeyPair::from_pem(&key_pem).map_err(|_| TlsError::Pem {
            path: dir.join(CA_KEY_FILE),
            what: "private key",
            help,
        })?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key).map_err(|_| TlsError::Pem {
            path: dir.join(CA_CERT_FILE),
            what: "CA certificate",
            help,
        })?;
        Ok(Self {
            cert_pem,
            key_pem,
            issuer,
        })
    }

    /// Writes the CA certificate and key into `dir` (created if missing).
    pub fn write(&self, dir: &Path) -> Result<(), TlsError> {
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).map_err(|source| TlsError::Write { path, source })
        };
        std::fs::create_dir_all(dir).map_err(|source| TlsError::Write {
            path: dir.to_path_buf(),
            source,
        })?;
        write(CA_CERT_FILE, &self.cert_pem)?;
        write(CA_KEY_FILE, &self.key_pem)
    }

    /// The CA certificate as PEM, for a client's trust store.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate as DER.
    pub fn cert_der(&self) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(self.cert_pem.as_bytes())
            .unwrap_or_else(|_| CertificateDer::from(Vec::new()))
    }

    /// A certificate for `names` (DNS names and IP addresses), signed by this CA.
    fn issue(
        &self,
        names: &[String],
        validity: (OffsetDateTime, OffsetDateTime),
        self_signed: bool,
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.subject_alt_names = names
            .iter()
            .map(|name| match name.parse::<IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => name.clone().try_into().map(SanType::DnsName),
            })
            .collect::<Result<_, _>>()?;
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            names.first().cloned().unwrap_or_default(),
        );
        params.distinguished_name = dn;
        params.not_before = validity.0;
        params.not_after = validity.1;
        let key = KeyPair::generate()?;
        let cert = if self_signed {
            params.self_signed(&key)?
        } else {
            params.signed_by(&key, &self.issuer)?
        };
        let key = PrivateKeyDer::try_from(key.serialize_der())
            .map_err(|_| TlsError::Generate(rcgen::Error::CouldNotParseKeyPair))?;
        Ok((vec![cert.der().clone()], key))
    }
}

/// The TLS acceptor for `host` as its `tls` settings say, or `None` when TLS is off.
/// `addr` is the address the host is bound to, named in its certificate.
pub(crate) fn acceptor(
    host: &Host,
    addr: IpAddr,
    ca: &FarmCa,
) -> Result<Option<TlsAcceptor>, TlsError> {
    let tls = &host.tls;
    let now = OffsetDateTime::now_utc();
    let current = (now - Span::days(1), now + Span::days(365));
    let names = vec![host.hostname.clone(), addr.to_string()];
    let (chain, key) = match (tls.mode, &tls.files) {
        (TlsMode::Off, _) => return Ok(None),
        (TlsMode::Valid, Some(files)) => load_pair(&files.cert, &files.key)?,
        (TlsMode::Valid, None) => ca.issue(&names, current, false)?,
        (TlsMode::SelfSigned, _) => ca.issue(&names, current, true)?,
        (TlsMode::Expired, _) => {
            ca.issue(&names, (now - Span::days(400), now - Span::days(35)), false)?
        }
        (TlsMode::NotYetValid, _) => {
            ca.issue(&names, (now + Span::days(30), now + Span::days(400)), false)?
        }
        (TlsMode::WrongHostname, _) => {
            let wrong = vec![format!("not-{}", host.hostname)];
            ca.issue(&wrong, current, false)?
        }
        (TlsMode::UnknownCa, _) => {
            FarmCa::generate_named("an unknown CA")?.issue(&names, current, false)?
        }
    };
    let versions: &[&rustls::SupportedProtocolVersion] = match tls.versions {
        TlsVersions::Any => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersions::Only12 => &[&rustls::version::TLS12],
        TlsVersions::Only13 => &[&rustls::version::TLS13],
    };
    let config_error = |source| TlsError::Config {
        host: host.name.clone(),
        source,
    };
    let config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(versions)
            .map_err(config_error)?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(config_error)?;
    Ok(Some(TlsAcceptor::from(Arc::new(config))))
}

fn load_pair(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let help = "give a PEM file with the certificate chain and one with its private key";
    let unreadable = |path: &Path| TlsError::Pem {
        path: path.to_path_buf(),
        what: "PEM data",
        help,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|_| unreadable(cert))?
        .collect::<Result<_, _>>()
        .map_err(|_| unreadable(cert))?;
    if chain.is_empty() {
        return Err(TlsError::Pem {
            path: cert.to_path_buf(),
            what: "certificate",
            help,
        });
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|_| TlsError::Pem {
        path: key.to_path_buf(),
        what: "private key",
        help,
    })?;
    Ok((chain, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_ca_loads_back_and_still_signs() {
        let dir = tempfile::tempdir().unwrap();
        let ca = FarmCa::generate().unwrap();
        ca.write(dir.path()).unwrap();
        let loaded = FarmCa::load(dir.path()).unwrap();
        assert_eq!(loaded.cert_pem(), ca.cert_pem());
        let names = vec!["mx1.test".to_string(), "127.0.0.1".to_string()];
        let now = OffsetDateTime::now_utc();
        let (chain, _) = loaded
            .issue(&names, (now, now + Span::days(1)), false)
            .unwrap();
        assert_eq!(chain.len(), 1);
    }

    #[test]
    fn loading_a_missing_ca_says_how_to_make_one() {
        let dir = tempfile::tempdir().unwrap();
        let error = FarmCa::load(dir.path()).unwrap_err().to_string();
        assert!(error.contains("ca.pem"), "{error}");
        assert!(error.contains("mxfarm ca DIR"), "{error}");
    }
}
