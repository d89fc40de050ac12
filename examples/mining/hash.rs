//! The course's proof of work: the hash of a nonce is the first eight bytes,
//! big-endian, of SHA-256 over `"{data} {nonce}"`.

use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicBool, Ordering};

/// The hash of one nonce. [`Hasher`] is the fast way to hash many.
pub fn hash(data: &str, nonce: u64) -> u64 {
    Hasher::new(data).hash(nonce)
}

/// Hashes many nonces of the same data: the `"{data} "` prefix is absorbed
/// once and the nonce's digits are written without allocating.
#[derive(Clone)]
pub struct Hasher {
    prefix: Sha256,
}

impl Hasher {
    pub fn new(data: &str) -> Hasher {
        let mut prefix = Sha256::new();
        prefix.update(data.as_bytes());
        prefix.update(b" ");
        Hasher { prefix }
    }

    pub fn hash(&self, nonce: u64) -> u64 {
        let mut digits = [0u8; 20]; // u64::MAX has 20 decimal digits
        let mut at = digits.len();
        let mut n = nonce;
        loop {
            at -= 1;
            digits[at] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        let digest = self.prefix.clone().chain_update(&digits[at..]).finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        u64::from_be_bytes(first)
    }
}

/// The least `(hash, nonce)` over `lower..=upper`; of equal hashes the
/// smaller nonce wins (the order a sequential scan would keep), so the
/// answer does not depend on how the range was cut. Returns `None` if the
/// range is empty or `stop` was raised (it is checked every few thousand
/// nonces, so a miner can be stopped in the middle of a chunk).
pub fn min_hash(data: &str, lower: u64, upper: u64, stop: &AtomicBool) -> Option<(u64, u64)> {
    const CHECK_EVERY: u64 = 4096;
    let hasher = Hasher::new(data);
    let mut best: Option<(u64, u64)> = None;
    for nonce in lower..=upper {
        if (nonce - lower) % CHECK_EVERY == 0 && stop.load(Ordering::Relaxed) {
            return None;
        }
        let candidate = (hasher.hash(nonce), nonce);
        if best.is_none_or(|b| candidate < b) {
            best = Some(candidate);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_handouts_examples() {
        // The course handout's worked example: nonce 1 of "msg" is least in [0, 2].
        assert_eq!(hash("msg", 0), 13781283048668101583);
        assert_eq!(hash("msg", 1), 4754799531757243342);
        assert_eq!(hash("msg", 2), 5611725180048225792);
        let never = AtomicBool::new(false);
        assert_eq!(
            min_hash("msg", 0, 2, &never),
            Some((4754799531757243342, 1))
        );
    }

    #[test]
    fn hasher_agrees_with_formatting_the_string() {
        let hasher = Hasher::new("some data");
        for nonce in [0, 9, 10, 99, 100, 12345, u64::MAX / 3, u64::MAX] {
            let digest = Sha256::digest(format!("some data {nonce}"));
            let expected = u64::from_be_bytes(digest[..8].try_into().unwrap());
            assert_eq!(hasher.hash(nonce), expected, "nonce {nonce}");
        }
    }

    #[test]
    fn min_hash_edges() {
        let never = AtomicBool::new(false);
        assert_eq!(min_hash("x", 5, 4, &never), None); // empty range
        let top = (hash("x", u64::MAX), u64::MAX);
        assert_eq!(min_hash("x", u64::MAX, u64::MAX, &never), Some(top));
        assert_eq!(min_hash("x", 0, 100, &AtomicBool::new(true)), None);
    }
}
