//! The cluster's certificates: a CA made by `sandpit cluster init`, node certificates issued
//! at join (from the node's own key: only its public key leaves the node), and the control
//! plane's client certificate. Node certificates carry only the `serverAuth` usage and the
//! control plane's only `clientAuth`, so a node's certificate cannot call another node's API.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    CertificateParams, CertificateSigningRequestParams, DnType, ExtendedKeyUsagePurpose, Issuer,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use sha2::{Digest, Sha256};

/// The CA certificate in a cluster dir.
pub const CA_CERT_FILE: &str = "ca.pem";
/// The CA private key in a cluster dir (0600).
pub const CA_KEY_FILE: &str = "ca-key.pem";
/// The join token in a cluster dir (0600).
pub const JOIN_TOKEN_FILE: &str = "join-token";
/// Prefix of join tokens (so a token pasted into the wrong place is recognisable).
const TOKEN_PREFIX: &str = "sandpit-join-";
/// The name the control plane's client certificate carries.
const CONTROL_NAME: &str = "control-plane.sandpit.cluster";
/// How long a node certificate is valid (nodes get a new one at every join).
const NODE_CERT_DAYS: u64 = 365;

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} is already a cluster dir (it has {CA_CERT_FILE}); remove it to start over")]
    Exists(PathBuf),
    #[error("certificate")]
    Cert(#[from] rcgen::Error),
    #[error("TLS configuration")]
    Tls(#[from] rustls::Error),
    #[error("TLS client verifier")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("PEM")]
    Pem(#[from] rustls::pki_types::pem::Error),
    #[error("invalid node id {0:?}: 1 to 50 characters a-z, 0-9 and -, not starting with -")]
    NodeId(String),
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> PkiError {
    let path = path.to_path_buf();
    move |source| PkiError::Io { what, path, source }
}

pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Whether `id` can name a node (it becomes a DNS label of its certificate).
pub fn valid_node_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 50
        && !id.starts_with('-')
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The DNS name in node `id`'s certificate (what the control plane checks when it connects).
pub fn node_dns_name(id: &str) -> String {
    format!("{id}.node.sandpit.cluster")
}

fn ca_params() -> CertificateParams {
    sandpit_egress::ca_params("sandpit cluster CA")
}

fn write_private(path: &Path, contents: &[u8]) -> Result<(), PkiError> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io("creating", path))?;
    file.write_all(contents).map_err(io("writing", path))
}

/// `sandpit cluster init --dir DIR`: a new CA and join token in `dir` (files 0600, the dir
/// 0700). Returns the join token. Refuses a dir that already holds a CA.
pub fn init(dir: &Path) -> Result<String, PkiError> {
    std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(io("restricting", dir))?;
    if dir.join(CA_CERT_FILE).exists() {
        return Err(PkiError::Exists(dir.to_path_buf()));
    }
    let key = KeyPair::generate()?;
    let cert = ca_params().self_signed(&key)?;
    let token = format!("{TOKEN_PREFIX}{}", hex::encode(rand::random::<[u8; 24]>()));
    write_private(&dir.join(CA_KEY_FILE), key.serialize_pem().as_bytes())?;
    write_private(&dir.join(JOIN_TOKEN_FILE), format!("{token}\n").as_bytes())?;
    write_private(&dir.join(CA_CERT_FILE), cert.pem().as_bytes())?;
    Ok(token)
}

/// A cluster's CA as the control plane holds it (`serve --cluster-dir`).
pub struct ClusterCa {
    ca_pem: String,
    ca_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
    token_sha256: [u8; 32],
}

impl std::fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterCa")
    }
}

impl ClusterCa {
    /// Loads the CA and join token of a dir made by [`init`].
    pub fn load(dir: &Path) -> Result<Self, PkiError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(io("reading", &path))
        };
        let ca_pem = read(CA_CERT_FILE)?;
        let key = KeyPair::from_pem(&read(CA_KEY_FILE)?)?;
        let token = read(JOIN_TOKEN_FILE)?;
        Ok(ClusterCa {
            ca_der: CertificateDer::from_pem_slice(ca_pem.as_bytes())?,
            ca_pem,
            issuer: Issuer::new(ca_params(), key),
            token_sha256: Sha256::digest(token.trim().as_bytes()).into(),
        })
    }

    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Whether `token` is the cluster's join token (digests compared, so the comparison's
    /// time says nothing about the token).
    pub fn token_matches(&self, token: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
        digest == self.token_sha256
    }

    /// A certificate for node `id` over the public key of its signing request (the request's
    /// own names and usages are ignored: the CA decides them).
    pub fn issue_node(&self, id: &str, csr_pem: &str) -> Result<String, PkiError> {
        if !valid_node_id(id) {
            return Err(PkiError::NodeId(id.to_owned()));
        }
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)?;
        let mut params = CertificateParams::new(vec![node_dns_name(id)])?;
        params.distinguished_name.push(DnType::CommonName, id);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        let now = std::time::SystemTime::now();
        params.not_before = (now - Duration::from_secs(300)).into();
        params.not_after = (now + Duration::from_secs(NODE_CERT_DAYS * 86_400)).into();
        Ok(params.signed_by(&csr.public_key, &self.issuer)?.pem())
    }

    /// TLS client configuration of the control plane: trusts only the cluster CA and presents
    /// a fresh client certificate it signs (one per control-plane process).
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![CONTROL_NAME.to_owned()])?;
        params
            .distinguished_name
            .push(DnType::CommonName, CONTROL_NAME);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer)?;
        let mut roots = RootCertStore::empty();
        roots.add(self.ca_der.clone())?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_client_auth_cert(vec![cert.der().clone()], key)?;
        Ok(Arc::new(config))
    }
}

/// A node's key and its signing request (the key never leaves the node).
pub fn node_key_and_request(id: &str) -> Result<(KeyPair, String), PkiError> {
    if !valid_node_id(id) {
        return Err(PkiError::NodeId(id.to_owned()));
    }
    let key = KeyPair::generate()?;
    let params = CertificateParams::new(vec![node_dns_name(id)])?;
    let csr = params.serialize_request(&key)?.pem()?;
    Ok((key, csr))
}

/// TLS server configuration of a node API: presents `cert_pem` (issued at join) and accepts
/// only clients with a certificate of the cluster CA that allows client authentication (the
/// control plane's).
pub fn node_server_config(
    ca_pem: &str,
    cert_pem: &str,
    key: &KeyPair,
) -> Result<Arc<ServerConfig>, PkiError> {
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(ca_pem.as_bytes())?)?;
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider()).build()?;
    let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes())?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![cert], key)?;
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_writes_private_files_and_refuses_a_second_time() {
        let dir = tempfile::tempdir().unwrap();
        let cluster = dir.path().join("c");
        let token = init(&cluster).unwrap();
        assert!(token.starts_with(TOKEN_PREFIX));
        for name in [CA_KEY_FILE, JOIN_TOKEN_FILE, CA_CERT_FILE] {
            let mode = std::fs::metadata(cluster.join(name))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{name}");
        }
        assert!(matches!(init(&cluster), Err(PkiError::Exists(_))));
        let ca = ClusterCa::load(&cluster).unwrap();
        assert!(ca.token_matches(&token));
        assert!(!ca.token_matches("sandpit-join-00"));
    }

    #[test]
    fn node_ids_are_dns_labels() {
        assert!(valid_node_id("node-1"));
        for bad in ["", "-a", "A", "a.b", "a/b", &"a".repeat(51)] {
            assert!(!valid_node_id(bad), "{bad}");
        }
    }
}
