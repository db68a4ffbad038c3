//! A host's `tls`: a mode (`tls = "valid"`) or a table of mode, versions and the files of
//! a certificate of the user's own, which must exist and hold what they should (read
//! with rustls' PEM parser, as the farm reads them when it starts).

use std::path::PathBuf;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::scenario::files::{self, ReadError};
use crate::scenario::model::{TlsFiles, TlsMode, TlsSettings, TlsVersions};
use crate::scenario::read::tree::{Node, Table};
use crate::scenario::read::{Cx, Key, values};
use crate::scenario::spec::tables;

/// The names of the modes, the first being the one examples show.
pub(super) const TLS_MODES: [(&str, TlsMode); 7] = [
    ("valid", TlsMode::Valid),
    ("off", TlsMode::Off),
    ("self-signed", TlsMode::SelfSigned),
    ("expired", TlsMode::Expired),
    ("not-yet-valid", TlsMode::NotYetValid),
    ("wrong-hostname", TlsMode::WrongHostname),
    ("unknown-ca", TlsMode::UnknownCa),
];

/// Other words for the TLS modes, and the mode meant.
const TLS_MODE_ALIASES: &[(&str, &str)] = &[
    ("on", "valid"),
    ("yes", "valid"),
    ("true", "valid"),
    ("enabled", "valid"),
    ("trusted", "valid"),
    ("none", "off"),
    ("no", "off"),
    ("false", "off"),
    ("disabled", "off"),
    ("selfsigned", "self-signed"),
    ("self", "self-signed"),
    ("untrusted", "unknown-ca"),
    ("untrusted-ca", "unknown-ca"),
    ("unknown-issuer", "unknown-ca"),
    ("future", "not-yet-valid"),
    ("not-valid-yet", "not-yet-valid"),
    ("wrong-name", "wrong-hostname"),
    ("hostname-mismatch", "wrong-hostname"),
    ("name-mismatch", "wrong-hostname"),
    ("mismatch", "wrong-hostname"),
];

const TLS_MODES_EXPLAINED: &str = "the modes are valid (a certificate signed by the farm's CA), off (no STARTTLS), self-signed, expired, not-yet-valid, wrong-hostname (a certificate for another name) and unknown-ca (signed by a CA nobody trusts)";

const TLS_VERSIONS_EXPLAINED: &str =
    "`versions` is 1.2 (TLS 1.2 only), 1.3 (TLS 1.3 only) or any (both, the default)";

/// A host's TLS settings from its `tls` value (problems reported; a default where the
/// value had one).
pub(super) fn settings(cx: &mut Cx, v: &Node, path: &str) -> TlsSettings {
    if let Some(table) = v.as_table() {
        // Every key of the table is read here; the spec's rows report the unknown ones.
        tables::tls().read(cx, &table, path);
        return from_table(cx, &table);
    }
    if let Some(b) = v.as_bool() {
        let hint = if b {
            format!("write tls = \"valid\" to offer STARTTLS; {TLS_MODES_EXPLAINED}")
        } else {
            "STARTTLS is off unless `tls` is set: remove it, or write tls = \"off\"".to_string()
        };
        cx.issue(
            v.span(),
            "`tls` must be a mode in quotes or a table, not a boolean",
            hint,
        );
        return TlsSettings::default();
    }
    TlsSettings {
        mode: mode(cx, tables::TLS, v).unwrap_or_default(),
        ..TlsSettings::default()
    }
}

/// `tls = { mode, versions, cert, key }`: the mode is `valid` unless written.
fn from_table(cx: &mut Cx, t: &Table) -> TlsSettings {
    let mode = match t.get(tables::MODE) {
        None => Some(TlsMode::Valid),
        Some(m) => self::mode(cx, tables::MODE, &m),
    };
    let versions_node = t.get(tables::VERSIONS);
    let versions = versions_node.as_ref().and_then(|v| self::versions(cx, v));
    if let (Some(TlsMode::Off), Some(v), Some(_)) = (mode, &versions_node, versions) {
        cx.issue(
            v.span(),
            "`versions` does nothing with mode = \"off\": the host does not offer STARTTLS",
            "remove versions, or choose a mode, like mode = \"valid\"",
        );
    }
    let (cert_node, key_node) = (t.get(tables::CERT), t.get(tables::KEY));
    let mut files = None;
    match mode {
        Some(mode) if mode != TlsMode::Valid => {
            let first = [(tables::CERT, &cert_node), (tables::KEY, &key_node)]
                .into_iter()
                .find_map(|(key, v)| v.as_ref().map(|v| (key, v)));
            if let Some((key, v)) = first {
                let name = mode.as_str();
                let written = if cert_node.is_some() && key_node.is_some() {
                    "cert and key"
                } else {
                    key
                };
                let hint = if mode == TlsMode::Off {
                    format!(
                        "remove {written}: with mode = \"off\" the host offers no STARTTLS, so it presents no certificate"
                    )
                } else {
                    format!(
                        "remove {written} to present the farm's {name} certificate, or write mode = \"valid\" to present your own"
                    )
                };
                cx.issue(
                    v.span(),
                    format!("`{key}` goes only with mode = \"valid\", not with mode = \"{name}\""),
                    hint,
                );
            }
        }
        // Valid, or a mode that is wrong (reported already): check the files.
        _ => {
            let cert = cert_node.as_ref().and_then(|v| file(cx, tables::CERT, v));
            let key = key_node.as_ref().and_then(|v| file(cx, tables::KEY, v));
            let example = "tls = { cert = \"certs/chain.pem\", key = \"certs/key.pem\" }";
            match (&cert_node, &key_node) {
                (Some(v), None) => cx.issue(
                    v.span(),
                    "`cert` without `key`: a certificate is presented with its private key",
                    format!("add the key's file, like {example}; or remove cert to present a certificate the farm makes"),
                ),
                (None, Some(v)) => cx.issue(
                    v.span(),
                    "`key` without `cert`: a private key is presented with its certificate",
                    format!("add the certificate chain's file, like {example}; or remove key to present a certificate the farm makes"),
                ),
                _ => {}
            }
            if let (Some(cert), Some(key)) = (cert, key) {
                files = Some(TlsFiles { cert, key });
            }
        }
    }
    TlsSettings {
        mode: mode.unwrap_or(TlsMode::Valid),
        versions: versions.unwrap_or_default(),
        files,
    }
}

/// A TLS mode, written as `tls = "..."` or `mode = "..."`.
fn mode(cx: &mut Cx, key: &str, v: &Node) -> Option<TlsMode> {
    if let Some(s) = v.as_str()
        && key == tables::TLS
        && let Some(version) = version_name(s)
    {
        cx.issue(
            v.span(),
            format!("`{}` is a TLS version, not a mode", s.trim()),
            format!(
                "write tls = {{ versions = \"{version}\" }} (the mode is then valid), or tls = {{ mode = \"expired\", versions = \"{version}\" }}"
            ),
        );
        return None;
    }
    values::choice(
        cx,
        key,
        v,
        &TLS_MODES,
        TLS_MODE_ALIASES,
        TLS_MODES_EXPLAINED,
    )
}

/// The version a `tls` value names when it is a TLS version, not a mode (`"1.3"`).
fn version_name(text: &str) -> Option<&'static str> {
    let lower = text.trim().to_ascii_lowercase();
    match lower.trim_start_matches("tlsv").trim_start_matches("tls") {
        "1.2" | "12" => Some("1.2"),
        "1.3" | "13" => Some("1.3"),
        _ => None,
    }
}

/// `versions = "1.2" | "1.3" | "any"`.
fn versions(cx: &mut Cx, v: &Node) -> Option<TlsVersions> {
    let number = v
        .as_float()
        .map(|f| f.to_string())
        .or(v.as_int().map(|n| n.to_string()));
    if let Some(number) = number {
        let hint = if matches!(number.as_str(), "1.2" | "1.3") {
            format!("write it in quotes: versions = \"{number}\"")
        } else {
            format!("write it in quotes; {TLS_VERSIONS_EXPLAINED}")
        };
        cx.issue(v.span(), "`versions` must be a string, not a number", hint);
        return None;
    }
    if let Some(s) = v.as_str() {
        let lower = s.trim().to_ascii_lowercase();
        let bare = lower.trim_start_matches("tlsv").trim_start_matches("tls");
        if matches!(bare, "1" | "1.0" | "1.1" | "10" | "11") {
            cx.issue(
                v.span(),
                format!("TLS {} is not offered: the farm speaks TLS 1.2 and 1.3 only", s.trim()),
                format!("to test a sender against an old server, write versions = \"1.2\"; {TLS_VERSIONS_EXPLAINED}"),
            );
            return None;
        }
    }
    values::choice(
        cx,
        tables::VERSIONS,
        v,
        &[
            ("any", TlsVersions::Any),
            ("1.2", TlsVersions::Only12),
            ("1.3", TlsVersions::Only13),
        ],
        &[
            ("all", "any"),
            ("both", "any"),
            ("1.2+", "any"),
            ("tls1.2", "1.2"),
            ("tlsv1.2", "1.2"),
            ("tls12", "1.2"),
            ("1.2-only", "1.2"),
            ("tls1.3", "1.3"),
            ("tlsv1.3", "1.3"),
            ("tls13", "1.3"),
            ("1.3-only", "1.3"),
        ],
        TLS_VERSIONS_EXPLAINED,
    )
}

/// The `cert` or `key` file of a host: a PEM file that exists, relative to the
/// scenario's directory unless absolute.
fn file(cx: &mut Cx, key: &'static str, v: &Node) -> Option<PathBuf> {
    let (what, example) = match key {
        tables::CERT => ("certificate chain", "\"certs/chain.pem\""),
        _ => ("private key", "\"certs/key.pem\""),
    };
    let written = values::string(cx, Key { name: key, example }, v)?.trim();
    if written.is_empty() {
        cx.issue(
            v.span(),
            format!("`{key}` is empty"),
            format!("write the path of the {what} (PEM), like {key} = {example}"),
        );
        return None;
    }
    if written.starts_with('~') {
        cx.issue(
            v.span(),
            format!("`~` is not expanded in `{key}`"),
            "write the whole path, or a path relative to the scenario file's directory",
        );
        return None;
    }
    let path = match cx.dir {
        Some(dir) => dir.join(written),
        None => PathBuf::from(written),
    };
    // Where it was looked for, when that is not what was written.
    let looked = if path.as_os_str() == written {
        String::new()
    } else {
        format!(" (looked for {})", path.display())
    };
    let relative = "a relative path is relative to the directory of the scenario file (of the current directory for a scenario given as text)";
    let bytes = match files::read_regular(&path, files::MAX_PEM_BYTES) {
        Ok(bytes) => bytes,
        Err(error) => {
            let (message, hint) = unreadable(&error, what, written, &looked);
            let hint = match hint {
                Unreadable::Path => format!("check the path; {relative}"),
                Unreadable::PemFile => {
                    format!("give the path of a regular PEM file, like {key} = {example}")
                }
                Unreadable::Permissions => "make the file readable by this user".to_string(),
            };
            cx.issue(v.span(), message, hint);
            return None;
        }
    };
    let has_cert = CertificateDer::pem_slice_iter(&bytes).any(|c| c.is_ok());
    let has_key = PrivateKeyDer::from_pem_slice(&bytes).is_ok();
    let problem = match key {
        tables::CERT if has_cert => None,
        tables::CERT if has_key => Some((
            format!("`{written}` holds a private key, not a certificate"),
            "cert and key may be swapped: cert is the certificate chain (-----BEGIN CERTIFICATE-----), key its private key".to_string(),
        )),
        tables::CERT => Some((
            format!("`{written}` holds no PEM certificate"),
            "give a PEM file that starts with -----BEGIN CERTIFICATE----- (the host's certificate first, then its issuers); convert a DER file with openssl x509 -inform der -in cert.der -out cert.pem".to_string(),
        )),
        _ if has_key => None,
        _ if has_cert => Some((
            format!("`{written}` holds a certificate, not a private key"),
            "cert and key may be swapped: key is the private key (-----BEGIN PRIVATE KEY-----), cert the certificate chain".to_string(),
        )),
        _ => Some((
            format!("`{written}` holds no PEM private key"),
            "give a PEM file that starts with -----BEGIN PRIVATE KEY----- (or RSA PRIVATE KEY, EC PRIVATE KEY)".to_string(),
        )),
    };
    if let Some((message, hint)) = problem {
        cx.issue(v.span(), message, hint);
        return None;
    }
    Some(path)
}

/// What to tell the author of a `cert` or `key` file that was not read.
enum Unreadable {
    /// It does not exist where it was looked for.
    Path,
    /// It is not a PEM file: a directory, a pipe, a device, or far too big.
    PemFile,
    /// It could not be read.
    Permissions,
}

/// The problem with a `cert` or `key` file that was not read, and what kind of hint fits.
fn unreadable(error: &ReadError, what: &str, written: &str, looked: &str) -> (String, Unreadable) {
    match error {
        ReadError::Io(e) if e.kind() == std::io::ErrorKind::NotFound => (
            format!("the {what} file `{written}` does not exist{looked}"),
            Unreadable::Path,
        ),
        ReadError::Io(e) if e.kind() == std::io::ErrorKind::IsADirectory => (
            format!("`{written}` is a directory, not a {what} file{looked}"),
            Unreadable::PemFile,
        ),
        ReadError::Io(e) => (
            format!("cannot read the {what} file `{written}`{looked}: {e}"),
            Unreadable::Permissions,
        ),
        ReadError::NotRegular(kind) => (
            format!("`{written}` is {kind}, not a {what} file{looked}"),
            Unreadable::PemFile,
        ),
        ReadError::TooBig(limit) => (
            format!(
                "`{written}` is larger than {}, too big for a {what} file{looked}",
                files::size(*limit)
            ),
            Unreadable::PemFile,
        ),
    }
}
