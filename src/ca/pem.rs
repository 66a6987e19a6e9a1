//! PEM text ↔ DER blocks (RFC 7468), for certificates and keys.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// One `-----BEGIN <label>-----` block.
#[derive(Clone, PartialEq, Eq)]
pub struct Block {
    pub label: String,
    pub der: Vec<u8>,
}

impl std::fmt::Debug for Block {
    /// Labels only: a block may hold a private key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Block({}, {} bytes)", self.label, self.der.len())
    }
}

/// Every PEM block in `text`, in order; text outside blocks is ignored. `Err` names the first
/// block whose body is not base64 or that has no end line.
pub fn parse(text: &str) -> Result<Vec<Block>, String> {
    let mut out = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let Some(label) = line
            .trim()
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        else {
            continue;
        };
        let end = format!("-----END {label}-----");
        let mut body = String::new();
        let mut ended = false;
        for l in lines.by_ref() {
            let l = l.trim();
            if l == end {
                ended = true;
                break;
            }
            // RFC 1421 headers (encrypted keys) are not base64.
            if l.contains(':') {
                return Err(format!(
                    "{label} block has headers (encrypted keys are not supported)"
                ));
            }
            body.push_str(l);
        }
        if !ended {
            return Err(format!("{label} block has no end line"));
        }
        let der = STANDARD
            .decode(body.as_bytes())
            .map_err(|e| format!("{label} block is not valid base64: {e}"))?;
        out.push(Block {
            label: label.to_string(),
            der,
        });
    }
    Ok(out)
}

/// A PEM block with 64-character lines.
pub fn encode(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let der: Vec<u8> = (0..200u8).collect();
        let text = format!("junk\n{}{}", encode("CERTIFICATE", &der), encode("X", &[1]));
        let blocks = parse(&text).unwrap();
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[0].der, der);
        assert_eq!(blocks[1].label, "X");
        assert!(parse("-----BEGIN A-----\nAAAA\n").is_err());
        assert!(parse("-----BEGIN A-----\n!!!\n-----END A-----\n").is_err());
    }
}
