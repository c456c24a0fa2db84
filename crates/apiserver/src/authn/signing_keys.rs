//! The service-account signing keys of one cluster: several verification keys at once, new
//! tokens signed by the newest, so a key can rotate without breaking live tokens.
//!
//! The set lives in the datastore under the cluster's own internal key, so every API
//! server of a cluster shares it and a restart keeps it. A server re-reads it when a token
//! names a key it does not know and at most [`RELOAD_AFTER`] after its last read, so a
//! rotation or retirement made through another server takes effect here within that time.
//!
//! Keys are ECDSA P-256 (JWT `ES256`); the key id is the unpadded base64url SHA-256 of the
//! public key's SubjectPublicKeyInfo, as upstream computes it for its keys.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use apimachinery::status::ApiError;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use store::Backend;

use crate::storage::store_error;

/// How long a server trusts its copy of the key set before reading it again.
pub const RELOAD_AFTER: Duration = Duration::from_secs(10);

/// One key as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StoredKey {
    /// Key id (the `kid` header of tokens it signs).
    pub kid: String,
    /// PKCS#8 PEM of the private key.
    pub private_pem: String,
    /// When the key was made (RFC 3339).
    pub created: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct StoredSet {
    /// Oldest first; the last one signs.
    keys: Vec<StoredKey>,
}

/// A usable key: the stored form plus what signing and verifying need.
pub struct Key {
    /// Its stored form.
    pub stored: StoredKey,
    encoding: jsonwebtoken::EncodingKey,
    decoding: jsonwebtoken::DecodingKey,
    /// JWK `x` and `y` (base64url coordinates of the public point).
    x: String,
    y: String,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.stored.kid)
            .finish()
    }
}

impl Key {
    fn load(stored: StoredKey) -> Result<Self, ApiError> {
        let pair = rcgen::KeyPair::from_pem(&stored.private_pem)
            .map_err(|e| ApiError::internal(format!("signing key {}: {e}", stored.kid)))?;
        let encoding = jsonwebtoken::EncodingKey::from_ec_pem(stored.private_pem.as_bytes())
            .map_err(|e| ApiError::internal(format!("signing key {}: {e}", stored.kid)))?;
        // An uncompressed P-256 point: 0x04 || X (32 bytes) || Y (32 bytes).
        let raw = pair.public_key_raw();
        if raw.len() != 65 || raw[0] != 4 {
            return Err(ApiError::internal(format!(
                "signing key {}: not an uncompressed P-256 point",
                stored.kid
            )));
        }
        let x = URL_SAFE_NO_PAD.encode(&raw[1..33]);
        let y = URL_SAFE_NO_PAD.encode(&raw[33..65]);
        let decoding = jsonwebtoken::DecodingKey::from_ec_components(&x, &y)
            .map_err(|e| ApiError::internal(format!("signing key {}: {e}", stored.kid)))?;
        Ok(Self {
            stored,
            encoding,
            decoding,
            x,
            y,
        })
    }

    /// The key that signs tokens with this key id.
    pub fn encoding(&self) -> &jsonwebtoken::EncodingKey {
        &self.encoding
    }

    /// The key that verifies tokens with this key id.
    pub fn decoding(&self) -> &jsonwebtoken::DecodingKey {
        &self.decoding
    }

    /// The public key as a JSON Web Key.
    pub fn jwk(&self) -> Value {
        json!({
            "use": "sig",
            "kty": "EC",
            "kid": self.stored.kid,
            "crv": "P-256",
            "alg": "ES256",
            "x": self.x,
            "y": self.y,
        })
    }
}

/// Makes a new key.
fn generate() -> Result<StoredKey, ApiError> {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| ApiError::internal(format!("generating a signing key: {e}")))?;
    let (_, spki) = x509_parser::pem::parse_x509_pem(pair.public_key_pem().as_bytes())
        .map_err(|e| ApiError::internal(format!("encoding a signing key: {e}")))?;
    let kid = URL_SAFE_NO_PAD.encode(Sha256::digest(&spki.contents));
    Ok(StoredKey {
        kid,
        private_pem: pair.serialize_pem(),
        created: apimachinery::object::now(),
    })
}

struct Loaded {
    keys: Arc<Vec<Key>>,
    at: Instant,
}

/// The key set of one cluster, cached from the store.
pub struct SigningKeys {
    backend: Arc<dyn Backend>,
    key: String,
    loaded: RwLock<Option<Loaded>>,
    /// Serializes reloads and writes on this server (the store's compare-and-swap
    /// serializes them across servers).
    write: tokio::sync::Mutex<()>,
}

impl SigningKeys {
    /// The key set of the cluster whose internal keys start with `/<cluster>/`.
    pub fn new(backend: Arc<dyn Backend>, cluster: &str) -> Self {
        Self {
            backend,
            key: format!("/{cluster}/_internal/serviceaccount-signing-keys"),
            loaded: RwLock::new(None),
            write: tokio::sync::Mutex::new(()),
        }
    }

    fn cached(&self, fresh_within: Duration) -> Option<Arc<Vec<Key>>> {
        let loaded = self.loaded.read().unwrap_or_else(|e| e.into_inner());
        loaded
            .as_ref()
            .filter(|l| l.at.elapsed() < fresh_within)
            .map(|l| l.keys.clone())
    }

    /// The current keys (oldest first), read from the store when the copy is stale; made
    /// on first use.
    pub async fn keys(&self) -> Result<Arc<Vec<Key>>, ApiError> {
        if let Some(keys) = self.cached(RELOAD_AFTER) {
            return Ok(keys);
        }
        self.reload().await
    }

    /// Reads the set again now (at most once per 200 ms, so a flood of tokens with unknown
    /// key ids does not become a flood of store reads).
    pub async fn reload(&self) -> Result<Arc<Vec<Key>>, ApiError> {
        let _guard = self.write.lock().await;
        if let Some(keys) = self.cached(Duration::from_millis(200)) {
            return Ok(keys);
        }
        let (set, _) = self.read_or_create().await?;
        self.install(set)
    }

    fn install(&self, set: StoredSet) -> Result<Arc<Vec<Key>>, ApiError> {
        let keys = Arc::new(
            set.keys
                .into_iter()
                .map(Key::load)
                .collect::<Result<Vec<_>, _>>()?,
        );
        *self.loaded.write().unwrap_or_else(|e| e.into_inner()) = Some(Loaded {
            keys: keys.clone(),
            at: Instant::now(),
        });
        Ok(keys)
    }

    async fn read_or_create(&self) -> Result<(StoredSet, i64), ApiError> {
        loop {
            if let Some(kv) = self.backend.get(&self.key).await.map_err(store_error)? {
                let set: StoredSet = serde_json::from_slice(&kv.value).map_err(|e| {
                    ApiError::internal(format!("service-account signing keys: {e}"))
                })?;
                if !set.keys.is_empty() {
                    return Ok((set, kv.mod_revision));
                }
            }
            let set = StoredSet {
                keys: vec![generate()?],
            };
            match self.backend.create(&self.key, encode(&set)?).await {
                Ok(rev) => return Ok((set, rev)),
                // Another server made the first key at the same moment: use theirs.
                Err(store::Error::AlreadyExists(_)) => continue,
                Err(e) => return Err(store_error(e)),
            }
        }
    }

    /// Applies `change` to the stored set with compare-and-swap and installs the result.
    async fn modify(
        &self,
        change: impl Fn(&mut StoredSet) -> Result<(), ApiError>,
    ) -> Result<Arc<Vec<Key>>, ApiError> {
        let _guard = self.write.lock().await;
        for _ in 0..16 {
            let (mut set, rev) = self.read_or_create().await?;
            change(&mut set)?;
            match self.backend.update(&self.key, encode(&set)?, rev).await {
                Ok(_) => return self.install(set),
                Err(store::Error::Conflict { .. }) => continue,
                Err(e) => return Err(store_error(e)),
            }
        }
        Err(ApiError::internal(
            "service-account signing keys: too many concurrent changes",
        ))
    }

    /// Adds a new key, which signs every token from now on; the older keys keep verifying
    /// the tokens they signed. Returns the new key id.
    pub async fn rotate(&self) -> Result<String, ApiError> {
        let new = generate()?;
        let kid = new.kid.clone();
        self.modify(move |set| {
            set.keys.push(new.clone());
            Ok(())
        })
        .await?;
        Ok(kid)
    }

    /// Removes key `kid`: tokens it signed stop being valid at once. The signing key (the
    /// newest) cannot be retired; rotate first.
    pub async fn retire(&self, kid: &str) -> Result<(), ApiError> {
        self.modify(|set| {
            let Some(pos) = set.keys.iter().position(|k| k.kid == kid) else {
                return Err(ApiError::new(
                    404,
                    "NotFound",
                    format!("service-account signing key {kid:?} not found"),
                ));
            };
            if pos + 1 == set.keys.len() {
                return Err(ApiError::bad_request(format!(
                    "key {kid:?} signs new tokens; rotate to a new key before retiring it"
                )));
            }
            set.keys.remove(pos);
            Ok(())
        })
        .await
        .map(|_| ())
    }
}

fn encode(set: &StoredSet) -> Result<Bytes, ApiError> {
    serde_json::to_vec(set)
        .map(Bytes::from)
        .map_err(|e| ApiError::internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(dir: &std::path::Path) -> Arc<dyn Backend> {
        Arc::new(
            store::SqliteBackend::open(store::SqliteConfig::new(&dir.join("db"))).expect("open"),
        )
    }

    #[tokio::test]
    async fn first_use_makes_one_key_and_servers_share_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let backend = backend(dir.path());
        let a = SigningKeys::new(backend.clone(), "c1");
        let b = SigningKeys::new(backend.clone(), "c1");
        let other = SigningKeys::new(backend, "c2");
        let ka = a.keys().await.expect("keys");
        let kb = b.keys().await.expect("keys");
        assert_eq!(ka.len(), 1);
        assert_eq!(ka[0].stored.kid, kb[0].stored.kid);
        let kc = other.keys().await.expect("keys");
        assert_ne!(
            ka[0].stored.kid, kc[0].stored.kid,
            "clusters have their own keys"
        );
        let jwk = ka[0].jwk();
        assert_eq!(jwk["kty"], "EC");
        assert_eq!(jwk["crv"], "P-256");
        assert_eq!(
            URL_SAFE_NO_PAD
                .decode(jwk["x"].as_str().unwrap())
                .unwrap()
                .len(),
            32
        );
    }

    #[tokio::test]
    async fn rotate_adds_and_retire_removes_but_never_the_signing_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let keys = SigningKeys::new(backend(dir.path()), "c1");
        let first = keys.keys().await.expect("keys")[0].stored.kid.clone();
        let second = keys.rotate().await.expect("rotate");
        let now = keys.keys().await.expect("keys");
        assert_eq!(
            now.iter().map(|k| k.stored.kid.clone()).collect::<Vec<_>>(),
            vec![first.clone(), second.clone()]
        );
        let err = keys.retire(&second).await.expect_err("signing key");
        assert_eq!(err.code, 400);
        let err = keys.retire("nope").await.expect_err("unknown");
        assert_eq!(err.code, 404);
        keys.retire(&first).await.expect("retire");
        let now = keys.keys().await.expect("keys");
        assert_eq!(now.len(), 1);
        assert_eq!(now[0].stored.kid, second);
    }
}
