//! Certificates and TLS server configurations for STARTTLS.
//!
//! Nothing is committed: at each start the farm makes a CA of its own with rcgen (or loads
//! one written earlier by `mxfarm ca DIR`), and for each host a certificate for its
//! hostname and listen address, good or broken as the host's `tls` mode says. Validity
//! dates are wall-clock dates, since that is what a client checks them against; farm time
//! (and `Farm::advance`) does not move them.
//!
//! - [`ca`](FarmCa): the CA, made, written and loaded;
//! - [`scope`](CaScope): what it may sign for, as its X.509 name constraints;
//! - this file: each host's certificate and TLS configuration.

mod ca;
mod scope;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use time::{Duration as Span, OffsetDateTime};
use tokio_rustls::TlsAcceptor;

pub use ca::{CA_VALIDITY_DAYS, Existing, FarmCa};
pub use scope::{CaScope, RESERVED_DOMAINS, RESERVED_NETWORKS};

use crate::scenario::files;
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
    #[error(
        "{} holds a CA already ({} exists), and it was left as it is: senders that trust it would stop trusting the farm\n  help: use it with `mxfarm run --ca {}`, or replace it with `mxfarm ca --force {}` (then trust the new ca.pem wherever the old one was trusted)",
        dir.display(), found.display(), dir.display(), dir.display()
    )]
    CaExists { dir: PathBuf, found: PathBuf },
    #[error(
        "{}/ca-key.pem is not the key of {}/ca.pem\n  help: give the two files that one `mxfarm ca DIR` wrote, or make a new pair with `mxfarm ca --force {}`",
        dir.display(), dir.display(), dir.display()
    )]
    Mismatch { dir: PathBuf },
    #[error(
        "the CA in {} is not valid now (it is valid from {from} until {until})\n  help: make a new one with `mxfarm ca --force {}`, and trust its ca.pem in place of the old one",
        dir.display(), dir.display()
    )]
    CaNotValid {
        dir: PathBuf,
        from: String,
        until: String,
    },
    #[error(
        "host {host}: the farm's CA may not sign for {name}: its name constraints permit only {scope}\n  help: give the host a hostname under .test, or make a CA for this scenario with `mxfarm ca --force DIR --scenario FILE` and run with `--ca DIR`"
    )]
    OutOfScope {
        host: String,
        name: String,
        scope: String,
    },
    #[error("host {host}: the TLS configuration is not usable: {source}")]
    Config { host: String, source: rustls::Error },
}

/// The file names `mxfarm ca DIR` writes and `mxfarm run --ca DIR` reads.
pub const CA_CERT_FILE: &str = "ca.pem";
pub const CA_KEY_FILE: &str = "ca-key.pem";

/// The TLS acceptor for `host` as its `tls` settings say, or `None` when TLS is off.
/// `addr` is the address the host is bound to, named in its certificate when the CA may
/// sign for it.
pub(crate) fn acceptor(
    host: &Host,
    addr: IpAddr,
    ca: &FarmCa,
) -> Result<Option<TlsAcceptor>, TlsError> {
    let tls = &host.tls;
    let now = OffsetDateTime::now_utc();
    let current = (now - Span::days(1), now + Span::days(365));
    let signed = |name: &str| names(host, name, addr, ca.scope());
    let (chain, key) = match (tls.mode, &tls.files) {
        (TlsMode::Off, _) => return Ok(None),
        (TlsMode::Valid, Some(files)) => load_pair(&files.cert, &files.key)?,
        (TlsMode::Valid, None) => ca.issue(&signed(&host.hostname)?, current, false)?,
        (TlsMode::SelfSigned, _) => {
            ca.issue(&names(host, &host.hostname, addr, None)?, current, true)?
        }
        (TlsMode::Expired, _) => ca.issue(
            &signed(&host.hostname)?,
            (now - Span::days(400), now - Span::days(35)),
            false,
        )?,
        (TlsMode::NotYetValid, _) => ca.issue(
            &signed(&host.hostname)?,
            (now + Span::days(30), now + Span::days(400)),
            false,
        )?,
        (TlsMode::WrongHostname, _) => {
            // For the other name alone: a client that checks the address must fail too.
            let mut wrong = signed(&scope::wrong_name(&host.hostname))?;
            wrong.truncate(1);
            ca.issue(&wrong, current, false)?
        }
        (TlsMode::UnknownCa, _) => {
            let names = names(host, &host.hostname, addr, None)?;
            FarmCa::generate_named("an unknown CA", None)?.issue(&names, current, false)?
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

/// The names of a certificate for `name` and `addr` from a CA of `scope`: a name it may
/// not sign for is an error now, rather than a certificate that every client refuses; an
/// address it may not sign for (a public one, or 0.0.0.0 for every address) is left out,
/// and clients verify the name.
fn names(
    host: &Host,
    name: &str,
    addr: IpAddr,
    scope: Option<&CaScope>,
) -> Result<Vec<String>, TlsError> {
    if let Some(scope) = scope
        && !scope.permits_name(name)
    {
        return Err(TlsError::OutOfScope {
            host: host.name.clone(),
            name: name.to_string(),
            scope: scope.describe(),
        });
    }
    let named = !addr.is_unspecified() && scope.is_none_or(|s| s.permits_address(addr));
    Ok(if named {
        vec![name.to_string(), addr.to_string()]
    } else {
        vec![name.to_string()]
    })
}

/// A host's own certificate chain and key, from regular PEM files of at most 1 MiB.
fn load_pair(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let help = "give a PEM file with the certificate chain and one with its private key";
    let read = |path: &Path| {
        files::read_regular(path, files::MAX_PEM_BYTES).map_err(|e| TlsError::Read {
            path: path.to_path_buf(),
            source: e.into(),
            help,
        })
    };
    let unreadable = |path: &Path| TlsError::Pem {
        path: path.to_path_buf(),
        what: "PEM data",
        help,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&read(cert)?)
        .collect::<Result<_, _>>()
        .map_err(|_| unreadable(cert))?;
    if chain.is_empty() {
        return Err(TlsError::Pem {
            path: cert.to_path_buf(),
            what: "certificate",
            help,
        });
    }
    let key = PrivateKeyDer::from_pem_slice(&read(key)?).map_err(|_| TlsError::Pem {
        path: key.to_path_buf(),
        what: "private key",
        help,
    })?;
    Ok((chain, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(hostname: &str) -> Host {
        Host {
            name: "mx1".into(),
            hostname: hostname.into(),
            ..Host::default()
        }
    }

    #[test]
    fn a_certificate_names_the_address_only_when_the_ca_may_sign_for_it() {
        let scope = CaScope::default();
        let names = |ip: &str| {
            names(
                &host("mx1.test"),
                "mx1.test",
                ip.parse().unwrap(),
                Some(&scope),
            )
        };
        assert_eq!(names("127.0.0.1").unwrap(), ["mx1.test", "127.0.0.1"]);
        assert_eq!(names("192.168.1.20").unwrap(), ["mx1.test", "192.168.1.20"]);
        assert_eq!(names("0.0.0.0").unwrap(), ["mx1.test"], "every address");
        assert_eq!(names("::").unwrap(), ["mx1.test"]);
        assert_eq!(names("8.8.8.8").unwrap(), ["mx1.test"], "a public one");
        // A CA without constraints (an older mxfarm's) signs for any address.
        let any = super::names(
            &host("mx1.test"),
            "mx1.test",
            "8.8.8.8".parse().unwrap(),
            None,
        );
        assert_eq!(any.unwrap(), ["mx1.test", "8.8.8.8"]);
    }

    #[test]
    fn a_hostname_outside_the_scope_is_an_error_that_says_what_to_do() {
        let ca = FarmCa::generate().unwrap();
        let mut host = host("mx1.corp.com");
        host.tls.mode = TlsMode::Valid;
        let Err(error) = acceptor(&host, "127.0.0.1".parse().unwrap(), &ca) else {
            panic!("a certificate for a name outside the scope");
        };
        assert_eq!(
            error.to_string(),
            "host mx1: the farm's CA may not sign for mx1.corp.com: its name constraints permit only names under .test, .localhost, .example and .invalid, and loopback, private, link-local and documentation addresses\n  help: give the host a hostname under .test, or make a CA for this scenario with `mxfarm ca --force DIR --scenario FILE` and run with `--ca DIR`"
        );
        // The CA nobody trusts, and a self-signed certificate, are not the farm CA's.
        for mode in [TlsMode::UnknownCa, TlsMode::SelfSigned] {
            host.tls.mode = mode;
            assert!(acceptor(&host, "127.0.0.1".parse().unwrap(), &ca).is_ok());
        }
    }
}
