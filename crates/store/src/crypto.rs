//! Encryption at rest of the values the store must not keep in clear (secret values, the
//! per-sandbox CA private keys): ChaCha20-Poly1305 under a data key kept in a file outside the
//! database, a random nonce per value.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

/// Marks an encrypted value: `enc1:` + hex(nonce ‖ ciphertext ‖ tag).
const PREFIX: &str = "enc1:";
const KEY_LEN: usize = 32;

/// Errors of the data key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("data key {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("data key {0} is not 64 hex digits")]
    Malformed(PathBuf),
    #[error("no system randomness")]
    Random,
}

/// Why a stored value could not be decrypted.
#[derive(Debug, thiserror::Error)]
pub enum DecryptError {
    #[error("malformed encrypted value")]
    Malformed,
    #[error("value does not open with this data key (wrong key file, or tampered)")]
    Open,
}

/// The data-encryption key.
pub struct DataKey {
    key: LessSafeKey,
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(..)")
    }
}

fn random<const N: usize>() -> Result<[u8; N], KeyError> {
    let mut bytes = [0u8; N];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| KeyError::Random)?;
    Ok(bytes)
}

impl DataKey {
    fn from_bytes(bytes: &[u8; KEY_LEN]) -> Self {
        // A 32-byte key is always a valid ChaCha20-Poly1305 key.
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, bytes)
            .unwrap_or_else(|_| unreachable!("32-byte key"));
        DataKey {
            key: LessSafeKey::new(unbound),
        }
    }

    /// A fresh random key kept only in memory (in-memory stores, tests).
    pub fn ephemeral() -> Result<Self, KeyError> {
        Ok(Self::from_bytes(&random()?))
    }

    /// The key in `path` (64 hex digits), or a new one written there with mode 0600.
    pub fn load_or_create(path: &Path) -> Result<Self, KeyError> {
        let io = |source| KeyError::Io {
            path: path.to_owned(),
            source,
        };
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let mut bytes = [0u8; KEY_LEN];
                hex::decode_to_slice(text.trim(), &mut bytes)
                    .map_err(|_| KeyError::Malformed(path.to_owned()))?;
                return Ok(Self::from_bytes(&bytes));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        let bytes: [u8; KEY_LEN] = random()?;
        // Written aside and renamed: a crash never leaves a half-written key behind.
        let tmp = path.with_extension("tmp");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?;
        file.write_all(format!("{}\n", hex::encode(bytes)).as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)?;
        Ok(Self::from_bytes(&bytes))
    }

    /// Encrypts `plain`; `context` (row and column) is authenticated, so a value copied to
    /// another row or column does not decrypt.
    pub fn seal(&self, context: &str, plain: &str) -> Result<String, KeyError> {
        let nonce_bytes: [u8; NONCE_LEN] = random()?;
        let mut buf = plain.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce_bytes),
                Aad::from(context.as_bytes()),
                &mut buf,
            )
            .map_err(|_| KeyError::Random)?;
        let mut out = nonce_bytes.to_vec();
        out.extend_from_slice(&buf);
        Ok(format!("{PREFIX}{}", hex::encode(out)))
    }

    /// Decrypts a value made by [`seal`](Self::seal) with the same `context`.
    pub fn open(&self, context: &str, stored: &str) -> Result<String, DecryptError> {
        let hex_part = stored.strip_prefix(PREFIX).ok_or(DecryptError::Malformed)?;
        let bytes = hex::decode(hex_part).map_err(|_| DecryptError::Malformed)?;
        if bytes.len() < NONCE_LEN {
            return Err(DecryptError::Malformed);
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| DecryptError::Malformed)?;
        let mut sealed = sealed.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(context.as_bytes()), &mut sealed)
            .map_err(|_| DecryptError::Open)?;
        String::from_utf8(plain.to_vec()).map_err(|_| DecryptError::Malformed)
    }
}

/// Whether a stored value is already encrypted (rows written before encryption are not).
pub(crate) fn is_sealed(stored: &str) -> bool {
    stored.starts_with(PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_with_fresh_nonces_and_are_bound_to_their_context() {
        let key = DataKey::ephemeral().unwrap();
        let a = key.seal("row/secrets", "s3cret").unwrap();
        let b = key.seal("row/secrets", "s3cret").unwrap();
        assert_ne!(a, b, "same value, same nonce");
        assert!(!a.contains("s3cret") && is_sealed(&a));
        assert_eq!(key.open("row/secrets", &a).unwrap(), "s3cret");
        assert!(matches!(
            key.open("other/secrets", &a),
            Err(DecryptError::Open)
        ));
        let other = DataKey::ephemeral().unwrap();
        assert!(matches!(
            other.open("row/secrets", &a),
            Err(DecryptError::Open)
        ));
        assert!(matches!(
            key.open("row/secrets", "s3cret"),
            Err(DecryptError::Malformed)
        ));
    }

    #[test]
    fn key_file_is_created_once_with_private_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.key");
        let sealed = DataKey::load_or_create(&path)
            .unwrap()
            .seal("c", "v")
            .unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = DataKey::load_or_create(&path).unwrap();
        assert_eq!(again.open("c", &sealed).unwrap(), "v");
        std::fs::write(&path, "short").unwrap();
        assert!(matches!(
            DataKey::load_or_create(&path),
            Err(KeyError::Malformed(_))
        ));
    }

    #[test]
    fn io_error_names_the_file_and_keeps_the_cause_as_its_source() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, "").unwrap();
        let path = file.join("secrets.key");
        let err = DataKey::load_or_create(&path).err().unwrap();
        // The cause is printed by whoever walks the chain, not twice.
        assert_eq!(err.to_string(), format!("data key {}", path.display()));
        let cause = std::error::Error::source(&err).unwrap();
        assert_eq!(cause.to_string(), "Not a directory (os error 20)");
    }
}
