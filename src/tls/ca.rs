//! The farm's certificate authority: made for a [`CaScope`], written to a directory with
//! its key readable by its owner alone, and loaded back by `mxfarm run --ca DIR`.

use std::fs::Permissions;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use time::{Duration as Span, OffsetDateTime};

use super::scope::CaScope;
use super::{CA_CERT_FILE, CA_KEY_FILE, TlsError};
use crate::scenario::files;

/// How long a CA the farm makes is valid, in days, from the day before it was made. A CA
/// is installed once and forgotten: it should not outlive the tests it was made for by a
/// decade. `mxfarm run --ca DIR` refuses one that has expired and says how to renew it.
pub const CA_VALIDITY_DAYS: i64 = 365;

/// What [`FarmCa::write`] does when the directory holds a CA already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// Leave it, and fail: senders trust the CA there, and would stop trusting the farm.
    Keep,
    /// Replace it (`mxfarm ca --force`).
    Replace,
}

/// The farm's certificate authority: senders that trust it trust every `valid` host.
pub struct FarmCa {
    cert_pem: String,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
    /// What it may sign for; `None` for a CA without name constraints (one an older
    /// mxfarm made), which signs for anything.
    scope: Option<CaScope>,
}

impl std::fmt::Debug for FarmCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FarmCa")
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

impl FarmCa {
    /// A new CA for the reserved domains and networks ([`CaScope::default`]), valid from
    /// a day ago for [`CA_VALIDITY_DAYS`].
    pub fn generate() -> Result<Self, TlsError> {
        Self::generate_in(&CaScope::default())
    }

    /// A new CA that may sign for `scope` only: its name constraints say so, and are
    /// critical.
    pub fn generate_in(scope: &CaScope) -> Result<Self, TlsError> {
        Self::generate_named("mxfarm test CA", Some(scope))
    }

    /// A CA named `name`; without a scope it has no name constraints (for the CA that
    /// nobody trusts, of `unknown-ca` hosts).
    pub(super) fn generate_named(name: &str, scope: Option<&CaScope>) -> Result<Self, TlsError> {
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
        params.name_constraints = scope.map(CaScope::constraints);
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Span::days(1);
        params.not_after = now + Span::days(CA_VALIDITY_DAYS);
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            issuer: Issuer::new(params, key),
            scope: scope.cloned(),
        })
    }

    /// Loads the CA that `mxfarm ca DIR` wrote. Each file must be a regular PEM file of
    /// at most 1 MiB, the key must be the certificate's, and the certificate valid now. A
    /// CA without name constraints (made by an older mxfarm) or with a key that others may
    /// read is loaded, with a warning that says how to replace it.
    pub fn load(dir: &Path) -> Result<Self, TlsError> {
        let help = "write one with `mxfarm ca DIR` first";
        let read = |name: &str| {
            let path = dir.join(name);
            files::read_regular(&path, files::MAX_PEM_BYTES)
                .map_err(std::io::Error::from)
                .and_then(|bytes| String::from_utf8(bytes).map_err(std::io::Error::other))
                .map_err(|source| TlsError::Read { path, source, help })
        };
        let cert_pem = read(CA_CERT_FILE)?;
        let key_pem = read(CA_KEY_FILE)?;
        let unusable = |name: &str, what| TlsError::Pem {
            path: dir.join(name),
            what,
            help,
        };
        let key = KeyPair::from_pem(&key_pem).map_err(|_| unusable(CA_KEY_FILE, "private key"))?;
        let der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|_| unusable(CA_CERT_FILE, "CA certificate"))?;
        let (_, cert) = x509_parser::parse_x509_certificate(&der)
            .map_err(|_| unusable(CA_CERT_FILE, "CA certificate"))?;
        if cert.public_key().raw != key.subject_public_key_info().as_slice() {
            return Err(TlsError::Mismatch {
                dir: dir.to_path_buf(),
            });
        }
        let validity = cert.validity();
        if !validity.is_valid() {
            return Err(TlsError::CaNotValid {
                dir: dir.to_path_buf(),
                from: validity.not_before.to_string(),
                until: validity.not_after.to_string(),
            });
        }
        let scope = CaScope::from_certificate(&cert);
        warn_of_risks(dir, scope.as_ref());
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key)
            .map_err(|_| unusable(CA_CERT_FILE, "CA certificate"))?;
        Ok(Self {
            cert_pem,
            key_pem,
            issuer,
            scope,
        })
    }

    /// Writes the CA certificate and key into `dir` (created, for its owner alone, if
    /// missing). The key is readable by its owner alone (0600). Each file is written in
    /// full to a new file of its own in `dir` (created exclusively, so never through a link
    /// planted there) and then renamed into place, which replaces a link at the name
    /// rather than following it. With [`Existing::Keep`], a `ca.pem` or `ca-key.pem`
    /// already there (a link included) is an error, and nothing is written.
    pub fn write(&self, dir: &Path, existing: Existing) -> Result<(), TlsError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| TlsError::Write {
                path: dir.to_path_buf(),
                source,
            })?;
        let (cert_path, key_path) = (dir.join(CA_CERT_FILE), dir.join(CA_KEY_FILE));
        let exists = |found: &Path| TlsError::CaExists {
            dir: dir.to_path_buf(),
            found: found.to_path_buf(),
        };
        if existing == Existing::Keep
            && let Some(found) = [&cert_path, &key_path]
                .into_iter()
                .find(|path| path.symlink_metadata().is_ok())
        {
            return Err(exists(found));
        }
        let key = staged(dir, CA_KEY_FILE, &self.key_pem, 0o600)?;
        let cert = staged(dir, CA_CERT_FILE, &self.cert_pem, 0o644)?;
        for (file, path) in [(key, &key_path), (cert, &cert_path)] {
            let placed = match existing {
                Existing::Replace => file.persist(path),
                // A file that appeared since the check above is not replaced either.
                Existing::Keep => file.persist_noclobber(path),
            };
            placed.map_err(|e| match e.error.kind() {
                std::io::ErrorKind::AlreadyExists => exists(path),
                _ => TlsError::Write {
                    path: path.clone(),
                    source: e.error,
                },
            })?;
        }
        Ok(())
    }

    /// What this CA may sign for; `None` when it has no name constraints.
    pub fn scope(&self) -> Option<&CaScope> {
        self.scope.as_ref()
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

    /// A certificate for `names` (DNS names and IP addresses), signed by this CA or by its
    /// own key.
    pub(super) fn issue(
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

/// `text` in a new file of `dir` with `mode`, written and synced, under a name of its own
/// that is created exclusively (an existing file or link there is never opened).
fn staged(
    dir: &Path,
    name: &str,
    text: &str,
    mode: u32,
) -> Result<tempfile::NamedTempFile, TlsError> {
    let write_error = |source| TlsError::Write {
        path: dir.join(name),
        source,
    };
    let prefix = format!(".{name}.");
    let mut file = tempfile::Builder::new()
        .prefix(&prefix)
        .suffix(".tmp")
        .permissions(Permissions::from_mode(mode))
        .tempfile_in(dir)
        .map_err(write_error)?;
    file.write_all(text.as_bytes()).map_err(write_error)?;
    file.as_file().sync_all().map_err(write_error)?;
    Ok(file)
}

/// Logs what makes a loaded CA a risk to the machines that trust it, and what to do.
fn warn_of_risks(dir: &Path, scope: Option<&CaScope>) {
    let renew = format!("make a new one with `mxfarm ca --force {}`", dir.display());
    if scope.is_none() {
        tracing::warn!(
            ca = %dir.display(),
            "this CA has no name constraints (an older mxfarm made it): a machine that trusts it trusts any certificate its key signs, for any name; {renew}"
        );
    }
    let key = dir.join(CA_KEY_FILE);
    if let Ok(metadata) = key.metadata()
        && metadata.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            key = %key.display(),
            mode = format!("{:o}", metadata.permissions().mode() & 0o777),
            "the CA's key is readable by other users, who could sign certificates its trusters accept; run chmod 600 on it, or {renew}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_ca_loads_back_and_still_signs() {
        let dir = tempfile::tempdir().unwrap();
        let ca = FarmCa::generate().unwrap();
        ca.write(dir.path(), Existing::Keep).unwrap();
        let loaded = FarmCa::load(dir.path()).unwrap();
        assert_eq!(loaded.cert_pem(), ca.cert_pem());
        assert_eq!(loaded.scope(), Some(&CaScope::default()));
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

    #[test]
    fn a_key_of_another_ca_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        FarmCa::generate()
            .unwrap()
            .write(dir.path(), Existing::Keep)
            .unwrap();
        let other = FarmCa::generate().unwrap();
        std::fs::write(dir.path().join(CA_KEY_FILE), &other.key_pem).unwrap();
        let error = FarmCa::load(dir.path()).unwrap_err().to_string();
        assert!(error.contains("is not the key of"), "{error}");
    }

    #[test]
    fn the_ca_is_valid_for_a_year() {
        let ca = FarmCa::generate().unwrap();
        let der = ca.cert_der();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let validity = cert.validity();
        let days = (validity.not_after.timestamp() - validity.not_before.timestamp()) / 86_400;
        assert_eq!(days, CA_VALIDITY_DAYS + 1);
    }
}
