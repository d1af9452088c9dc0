//! TLS of the egress proxy: the per-sandbox interception CA and its leaf certificates, the
//! client config for upstream servers, and the SNI of a ClientHello.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// Errors of certificate handling.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("making or loading a certificate")]
    Cert(#[from] rcgen::Error),
    #[error("the CA certificate is not PEM")]
    CaPem(#[source] rustls::pki_types::pem::Error),
    #[error("TLS configuration")]
    Rustls(#[from] rustls::Error),
    #[error("reading CA certificates from {path}")]
    Roots {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("no CA certificate in {path}")]
    NoRoots { path: PathBuf },
}

/// The host's CA bundle, trusted for upstream TLS when present.
pub const HOST_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Parameters of a CA named `common_name` that signs leaves directly; a pure function of the
/// name, so a stored CA can sign again without parsing its certificate. Sandbox egress CAs and
/// the cluster CA share it.
pub fn ca_params(common_name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params
        .distinguished_name
        .push(DnType::OrganizationName, "sandpit");
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

fn egress_ca_name(sandbox: &str) -> String {
    format!("sandpit egress CA {sandbox}")
}

/// A new CA for `sandbox`: `(certificate PEM, private key PEM)`.
pub fn generate_ca(sandbox: &str) -> Result<(String, String), TlsError> {
    let key = KeyPair::generate()?;
    let cert = ca_params(&egress_ca_name(sandbox)).self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// A sandbox's CA, signing leaf certificates for the hosts the proxy intercepts.
pub struct SandboxCa {
    pub cert_pem: String,
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
    /// One key for every leaf of this sandbox.
    leaf_key: KeyPair,
    leaves: Mutex<HashMap<String, Arc<ServerConfig>>>,
}

impl SandboxCa {
    pub fn load(sandbox: &str, cert_pem: &str, key_pem: &str) -> Result<Self, TlsError> {
        let key = KeyPair::from_pem(key_pem)?;
        let cert_der =
            CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(TlsError::CaPem)?;
        Ok(SandboxCa {
            cert_pem: cert_pem.to_owned(),
            cert_der,
            issuer: Issuer::new(ca_params(&egress_ca_name(sandbox)), key),
            leaf_key: KeyPair::generate()?,
            leaves: Mutex::default(),
        })
    }

    /// Server config presenting a certificate for `host`, signed by this CA (cached).
    pub fn server_config(&self, host: &str) -> Result<Arc<ServerConfig>, TlsError> {
        let mut leaves = self.leaves.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(config) = leaves.get(host) {
            return Ok(config.clone());
        }
        let mut params = CertificateParams::new(vec![host.to_owned()])?;
        params.distinguished_name.push(DnType::CommonName, host);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let leaf = params.signed_by(&self.leaf_key, &self.issuer)?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.leaf_key.serialize_der()));
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(vec![leaf.der().clone(), self.cert_der.clone()], key)?;
        // The proxy speaks HTTP/1.1 only on intercepted connections.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let config = Arc::new(config);
        // Bounded: a sandbox cannot grow this without limit by naming hosts.
        if leaves.len() >= 1024 {
            leaves.clear();
        }
        leaves.insert(host.to_owned(), config.clone());
        Ok(config)
    }
}

/// Client config for upstream servers: the host's CA bundle plus `extra_roots` (PEM files).
pub fn upstream_config(extra_roots: &[PathBuf]) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    let host = Path::new(HOST_CA_BUNDLE);
    let files = host
        .is_file()
        .then_some(host)
        .into_iter()
        .chain(extra_roots.iter().map(PathBuf::as_path));
    for path in files {
        let err = |source| TlsError::Roots {
            path: path.to_owned(),
            source,
        };
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(err)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(err)?;
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(TlsError::NoRoots {
                path: path.to_owned(),
            });
        }
    }
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// What the first bytes a client sent in a tunnel are.
#[derive(Debug, PartialEq, Eq)]
pub enum Hello {
    /// More bytes are needed to tell.
    Incomplete,
    /// Not a TLS handshake.
    NotTls,
    /// A TLS ClientHello with this server name (none: no SNI extension).
    Tls(Option<String>),
    /// A TLS record that is not a parseable ClientHello.
    Invalid,
}

/// Largest first record read before deciding (TLS caps records at 16 KiB + overhead).
pub const MAX_HELLO: usize = 5 + 16384 + 2048;

/// Parses the first TLS record of a connection for the ClientHello's server name.
pub fn parse_hello(buf: &[u8]) -> Hello {
    let Some(&first) = buf.first() else {
        return Hello::Incomplete;
    };
    if first != 0x16 {
        return Hello::NotTls;
    }
    if buf.len() < 5 {
        return Hello::Incomplete;
    }
    let len = u16::from_be_bytes([buf[3], buf[4]]) as usize;
    if buf.len() < 5 + len {
        return if 5 + len > MAX_HELLO {
            Hello::Invalid
        } else {
            Hello::Incomplete
        };
    }
    client_hello_sni(&buf[5..5 + len]).unwrap_or(Hello::Invalid)
}

/// A cursor over handshake bytes; every read is bounds-checked.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<usize> {
        self.take(1).map(|b| b[0] as usize)
    }
    fn u16(&mut self) -> Option<usize> {
        self.take(2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
    }
    fn u24(&mut self) -> Option<usize> {
        self.take(3)
            .map(|b| ((b[0] as usize) << 16) | ((b[1] as usize) << 8) | b[2] as usize)
    }
}

fn client_hello_sni(record: &[u8]) -> Option<Hello> {
    let mut r = Reader(record);
    if r.u8()? != 1 {
        return None; // not a ClientHello
    }
    let len = r.u24()?;
    // A ClientHello split over several records is not supported: refuse rather than guess.
    let mut body = Reader(r.take(len)?);
    body.take(2 + 32)?; // version, random
    let n = body.u8()?;
    body.take(n)?; // session id
    let n = body.u16()?;
    body.take(n)?; // cipher suites
    let n = body.u8()?;
    body.take(n)?; // compression methods
    if body.0.is_empty() {
        return Some(Hello::Tls(None));
    }
    let n = body.u16()?;
    let mut exts = Reader(body.take(n)?);
    while !exts.0.is_empty() {
        let kind = exts.u16()?;
        let n = exts.u16()?;
        let data = exts.take(n)?;
        if kind != 0 {
            continue;
        }
        let mut list = Reader(data);
        let n = list.u16()?;
        let mut names = Reader(list.take(n)?);
        while !names.0.is_empty() {
            let name_type = names.u8()?;
            let n = names.u16()?;
            let name = names.take(n)?;
            if name_type == 0 {
                let name = std::str::from_utf8(name).ok()?;
                return Some(Hello::Tls(Some(name.to_owned())));
            }
        }
    }
    Some(Hello::Tls(None))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real ClientHello as rustls sends it.
    fn client_hello(server_name: &str) -> Vec<u8> {
        let config = upstream_config(&[]).unwrap();
        let name = rustls::pki_types::ServerName::try_from(server_name.to_owned()).unwrap();
        let mut conn = rustls::ClientConnection::new(config, name).unwrap();
        let mut out = Vec::new();
        conn.write_tls(&mut out).unwrap();
        out
    }

    #[test]
    fn sni_is_read_from_a_client_hello() {
        let hello = client_hello("api.example.test");
        assert_eq!(
            parse_hello(&hello),
            Hello::Tls(Some("api.example.test".into()))
        );
        for cut in [0, 1, 4, 5, hello.len() - 1] {
            assert_eq!(parse_hello(&hello[..cut]), Hello::Incomplete, "cut {cut}");
        }
        assert_eq!(parse_hello(b"GET / HTTP/1.1\r\n"), Hello::NotTls);
        assert_eq!(parse_hello(&[0x16, 3, 1, 0, 4, 2, 0, 0, 0]), Hello::Invalid);
        // Garbage inside a complete record never panics.
        let mut broken = hello.clone();
        for b in broken.iter_mut().skip(9) {
            *b = 0xff;
        }
        assert_eq!(parse_hello(&broken), Hello::Invalid);
    }

    #[test]
    fn a_stored_ca_signs_leaves_again() {
        let (cert, key) = generate_ca("sb-1").unwrap();
        let ca = SandboxCa::load("sb-1", &cert, &key).unwrap();
        let a = ca.server_config("api.example.test").unwrap();
        let b = ca.server_config("api.example.test").unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert!(SandboxCa::load("sb-1", "junk", &key).is_err());
    }
}
