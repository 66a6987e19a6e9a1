//! Private key files: PKCS#8 (`PRIVATE KEY`) as is, PKCS#1 RSA (`RSA PRIVATE KEY`, what Istio's
//! sample CA and `openssl genrsa -traditional` write) wrapped into PKCS#8 for the signer.

use std::path::Path;

use rcgen::KeyPair;

use super::{CaError, KeyMaterial, pem};

/// DER length octets.
fn der_len(len: usize) -> Vec<u8> {
    if len < 0x80 {
        return vec![len as u8];
    }
    let bytes: Vec<u8> = len
        .to_be_bytes()
        .into_iter()
        .skip_while(|b| *b == 0)
        .collect();
    let mut out = vec![0x80 | bytes.len() as u8];
    out.extend(bytes);
    out
}

fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend(der_len(body.len()));
    out.extend_from_slice(body);
    out
}

/// PKCS#1 RSAPrivateKey → PKCS#8 PrivateKeyInfo.
fn pkcs1_to_pkcs8(pkcs1: &[u8]) -> Vec<u8> {
    // version 0, AlgorithmIdentifier { rsaEncryption, NULL }
    let mut body = vec![0x02, 0x01, 0x00];
    body.extend_from_slice(&[
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ]);
    body.extend(tlv(0x04, pkcs1));
    tlv(0x30, &body)
}

/// Reads a private key file into PKCS#8 PEM key material.
pub fn read_key(path: &Path, text: &str) -> Result<KeyMaterial, CaError> {
    let err = |m: String| CaError::File {
        path: path.to_path_buf(),
        message: m,
    };
    let blocks = pem::parse(text).map_err(err)?;
    let block = blocks
        .iter()
        .find(|b| b.label.ends_with("PRIVATE KEY"))
        .ok_or_else(|| err("no PRIVATE KEY block".to_string()))?;
    let pkcs8 = match block.label.as_str() {
        "PRIVATE KEY" => block.der.clone(),
        "RSA PRIVATE KEY" => pkcs1_to_pkcs8(&block.der),
        "EC PRIVATE KEY" => {
            return Err(err(
                "EC PRIVATE KEY (SEC1) is not supported; convert it to PKCS#8 with `openssl pkcs8 -topk8 -nocrypt`"
                    .to_string(),
            ));
        }
        other => {
            return Err(err(format!(
                "{other} is not supported (encrypted keys cannot be read)"
            )));
        }
    };
    let material = KeyMaterial::new(pem::encode("PRIVATE KEY", &pkcs8).into_bytes());
    key_pair(&material).map_err(err)?;
    Ok(material)
}

/// The signer for PKCS#8 PEM key material.
pub fn key_pair(key: &KeyMaterial) -> Result<KeyPair, String> {
    let text = std::str::from_utf8(key.expose()).map_err(|_| "key is not PEM text".to_string())?;
    KeyPair::from_pem(text)
        .map_err(|e| format!("not a usable private key (ECDSA P-256/P-384, Ed25519 or RSA): {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_lengths() {
        assert_eq!(der_len(5), vec![5]);
        assert_eq!(der_len(0x80), vec![0x81, 0x80]);
        assert_eq!(der_len(0x1234), vec![0x82, 0x12, 0x34]);
    }

    #[test]
    fn reads_pkcs1_rsa_keys() {
        // A test-only key (`openssl genrsa -traditional 2048`), the format of Istio's sample CA.
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/ca/rsa-pkcs1-test-key.pem");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
        let key = read_key(&path, &text).unwrap();
        let pair = key_pair(&key).unwrap();
        assert_eq!(pair.algorithm(), &rcgen::PKCS_RSA_SHA256);
    }
}
