//! The reference checksum of Data messages.

/// Computes the checksum of a Data message exactly as the Go reference
/// `CalculateChecksum(connID, seqNum, size, payload)` does.
///
/// Each header value is cut to 32 bits and its two 16-bit halves are added
/// *in 16 bits* (the carry of that one addition is lost: Go peers reject
/// messages whose checksum does not keep this quirk). Payload bytes are added
/// as little-endian 16-bit words, the sum is folded to 16 bits and inverted.
///
/// # Examples
///
/// ```
/// assert_eq!(liveseq::proto::checksum(1, 1001, 5, b"hello"), 10701);
/// assert_eq!(liveseq::proto::checksum(1, 1, 0, b""), 65533);
/// ```
pub fn checksum(conn_id: u32, seq_num: u64, size: u64, payload: &[u8]) -> u16 {
    // The reference takes each header value as a 32-bit integer: `as u32`
    // truncates on purpose. The sum cannot overflow a u64: it adds at most
    // 3 + len/2 + 1 values below 2^16, and a slice is shorter than 2^63.
    let mut sum: u64 = u64::from(halves(conn_id))
        + u64::from(halves(seq_num as u32))
        + u64::from(halves(size as u32));
    let mut words = payload.chunks_exact(2);
    for w in &mut words {
        sum += u64::from(u16::from_le_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        sum += u64::from(*last);
    }
    while sum > 0xFFFF {
        sum = (sum >> 16) + (sum & 0xFFFF);
    }
    !(sum as u16)
}

fn halves(v: u32) -> u16 {
    (v as u16).wrapping_add((v >> 16) as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Worked by hand: (1, 1001, 5, "hello").
    /// Header: 1 + 1001 + 5 = 1007. Payload words (little-endian): "he" = 0x6568,
    /// "ll" = 0x6c6c, "o" = 0x006f; 25960 + 27756 + 111 = 53827. Total 54834 fits
    /// in 16 bits; !54834 = 65535 - 54834 = 10701.
    #[test]
    fn hand_worked_hello() {
        assert_eq!(1007 + 0x6568 + 0x6c6c + 0x6f, 54834);
        assert_eq!(checksum(1, 1001, 5, b"hello"), 10701);
    }

    #[test]
    fn reference_vectors() {
        let cases: &[(u32, u64, u64, &[u8], u16)] = &[
            (1, 1001, 5, b"hello", 10701),
            (1, 1, 0, b"", 65533),
            (7, 3, 5, b"third", 9391),
            (2, 131071, 1, b"\xff", 65277),
            (3, 4294967295, 3, b"abc", 40246),
            (65535, 65535, 65535, b"\xff\xff\xff", 65280),
        ];
        for &(c, s, z, p, want) in cases {
            assert_eq!(checksum(c, s, z, p), want, "({c}, {s}, {z}, {p:?})");
        }
    }

    /// 131071 = 0x1_FFFF: halves 0xFFFF + 0x0001 wrap to 0 in 16 bits. A
    /// 32-bit addition would give 0x10000 and a different checksum.
    #[test]
    fn keeps_sixteen_bit_wrap_of_header_halves() {
        assert_eq!(halves(131071), 0);
        let without_quirk = {
            let mut sum: u32 = 2 + 0x10000 + 1 + 0xff;
            while sum > 0xFFFF {
                sum = (sum >> 16) + (sum & 0xFFFF);
            }
            !(sum as u16)
        };
        assert_ne!(checksum(2, 131071, 1, b"\xff"), without_quirk);
    }
}
