//! The signature algorithms the services accept, as a `jsonwebtoken` crypto provider.
//!
//! `jsonwebtoken`'s own RustCrypto provider links every algorithm it knows (RSA-PSS, P-384,
//! Ed25519 and the SHA-384/512 variants) into the Worker, because it chooses at run time. This
//! provider knows the three algorithms a Supabase project signs with and nothing else: HS256
//! (legacy secrets, and the upload grants this service signs itself), and with feature
//! `jwt-verify` ES256 and RS256 (the upload Worker verifies those with WebCrypto instead).
//! Everything else is refused as an invalid algorithm before any key is read.

use hmac::{Hmac, KeyInit, Mac};
#[cfg(feature = "verify")]
use jsonwebtoken::DecodingKeyKind;
use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::{Error, ErrorKind};
use jsonwebtoken::jwk::ThumbprintHash;
use jsonwebtoken::signature::{self, Signer, Verifier};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, EncodingKey};
use sha2::{Digest, Sha256};

static PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: signer,
    verifier_factory: verifier,
    key_utils: KeyUtils { compute_digest, ..KeyUtils::new_unimplemented() },
};

/// Makes this the process's provider (idempotent; called before every sign and verify).
pub fn install() {
    // Fails only when it is already installed, which is the goal.
    let _ = PROVIDER.install_default();
}

fn refused(family: AlgorithmFamily, expected: AlgorithmFamily) -> Result<(), Error> {
    if family == expected { Ok(()) } else { Err(ErrorKind::InvalidKeyFormat.into()) }
}

fn signer(algorithm: &Algorithm, key: &EncodingKey) -> Result<Box<dyn JwtSigner>, Error> {
    match algorithm {
        Algorithm::HS256 => {
            refused(key.family(), AlgorithmFamily::Hmac)?;
            Ok(Box::new(Hs256(Hmac::new_from_slice(key.as_bytes()).map_err(|_| ErrorKind::InvalidKeyFormat)?)))
        }
        #[cfg(feature = "signing")]
        Algorithm::ES256 => {
            use p256::pkcs8::DecodePrivateKey as _;
            refused(key.family(), AlgorithmFamily::Ec)?;
            Ok(Box::new(Es256Signer(p256::ecdsa::SigningKey::from_pkcs8_der(key.as_bytes()).map_err(|_| ErrorKind::InvalidEcdsaKey)?)))
        }
        _ => Err(ErrorKind::InvalidAlgorithm.into()),
    }
}

fn verifier(algorithm: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>, Error> {
    match algorithm {
        Algorithm::HS256 => {
            refused(key.family(), AlgorithmFamily::Hmac)?;
            Ok(Box::new(Hs256(Hmac::new_from_slice(key.try_get_as_bytes()?).map_err(|_| ErrorKind::InvalidKeyFormat)?)))
        }
        #[cfg(feature = "verify")]
        Algorithm::ES256 => {
            refused(key.family(), AlgorithmFamily::Ec)?;
            let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(key.try_get_as_bytes()?).map_err(|_| ErrorKind::InvalidEcdsaKey)?;
            Ok(Box::new(Es256Verifier(key)))
        }
        #[cfg(feature = "verify")]
        Algorithm::RS256 => {
            refused(key.family(), AlgorithmFamily::Rsa)?;
            let DecodingKeyKind::RsaModulusExponent { n, e } = key.kind() else {
                // Keys come from JWKs, which give the modulus and exponent.
                return Err(ErrorKind::InvalidRsaKey("expected an RSA modulus and exponent".into()).into());
            };
            let key = rsa::PublicKey::new(rsa::BoxedUint::from_be_slice_vartime(n), rsa::BoxedUint::from_be_slice_vartime(e))
                .map_err(|e| ErrorKind::InvalidRsaKey(e.to_string()))?;
            Ok(Box::new(Rs256Verifier(key)))
        }
        _ => Err(ErrorKind::InvalidAlgorithm.into()),
    }
}

fn compute_digest(data: &[u8], hash: ThumbprintHash) -> Result<Vec<u8>, Error> {
    match hash {
        ThumbprintHash::SHA256 => Ok(Sha256::digest(data).to_vec()),
        _ => Err(ErrorKind::InvalidAlgorithm.into()),
    }
}

struct Hs256(Hmac<Sha256>);

impl Signer<Vec<u8>> for Hs256 {
    fn try_sign(&self, message: &[u8]) -> Result<Vec<u8>, signature::Error> {
        Ok(self.0.clone().chain_update(message).finalize().into_bytes().to_vec())
    }
}

impl Verifier<Vec<u8>> for Hs256 {
    fn verify(&self, message: &[u8], tag: &Vec<u8>) -> Result<(), signature::Error> {
        // Constant-time comparison of the tag.
        self.0.clone().chain_update(message).verify_slice(tag).map_err(signature::Error::from_source)
    }
}

impl JwtSigner for Hs256 {
    fn algorithm(&self) -> Algorithm {
        Algorithm::HS256
    }
}

impl JwtVerifier for Hs256 {
    fn algorithm(&self) -> Algorithm {
        Algorithm::HS256
    }
}

#[cfg(feature = "verify")]
struct Es256Verifier(p256::ecdsa::VerifyingKey);

#[cfg(feature = "verify")]
impl Verifier<Vec<u8>> for Es256Verifier {
    fn verify(&self, message: &[u8], signature: &Vec<u8>) -> Result<(), signature::Error> {
        // JWS carries r || s (64 bytes), not DER.
        let signature = p256::ecdsa::Signature::from_slice(signature).map_err(signature::Error::from_source)?;
        self.0.verify(message, &signature).map_err(signature::Error::from_source)
    }
}

#[cfg(feature = "verify")]
impl JwtVerifier for Es256Verifier {
    fn algorithm(&self) -> Algorithm {
        Algorithm::ES256
    }
}

#[cfg(feature = "verify")]
struct Rs256Verifier(rsa::PublicKey);

#[cfg(feature = "verify")]
impl Verifier<Vec<u8>> for Rs256Verifier {
    fn verify(&self, message: &[u8], signature: &Vec<u8>) -> Result<(), signature::Error> {
        self.0.verify(rsa::Pkcs1v15Sign::new::<Sha256>(), &Sha256::digest(message), signature).map_err(signature::Error::from_source)
    }
}

#[cfg(feature = "verify")]
impl JwtVerifier for Rs256Verifier {
    fn algorithm(&self) -> Algorithm {
        Algorithm::RS256
    }
}

#[cfg(feature = "signing")]
struct Es256Signer(p256::ecdsa::SigningKey);

#[cfg(feature = "signing")]
impl Signer<Vec<u8>> for Es256Signer {
    fn try_sign(&self, message: &[u8]) -> Result<Vec<u8>, signature::Error> {
        let signature: p256::ecdsa::Signature = self.0.try_sign(message)?;
        Ok(signature::SignatureEncoding::to_vec(&signature))
    }
}

#[cfg(feature = "signing")]
impl JwtSigner for Es256Signer {
    fn algorithm(&self) -> Algorithm {
        Algorithm::ES256
    }
}
