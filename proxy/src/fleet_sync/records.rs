//! Records in an append-only file: the on-disk event queue's segments
//! ([`super::queue`]) and the applied-changes journal ([`super::journal`]).
//!
//! A record is `len` (u32, little-endian, 1 to the codec's maximum), a
//! 16-byte check — BLAKE3 over `len` and the payload, keyed when the codec
//! has a key — and `len` bytes of payload. A crash can leave the last
//! record half written (a *torn tail*), and a filesystem can leave zeros or
//! old bytes past it; [`Codec::decode`] reads records while each is whole
//! and its check verifies, and says where the valid prefix ends, so that
//! the caller cuts the rest off before appending again. Nothing after the
//! first bad record is read: a length that lands in the middle of garbage
//! could otherwise find a "record" that was never written.

/// Bytes before a record's payload: its length and its check.
pub const HEADER: usize = 4 + CHECK;
const CHECK: usize = 16;

/// How records are checked and how large one may be.
#[derive(Clone)]
pub struct Codec {
    /// Keys the check (a MAC) when set; a plain checksum otherwise.
    key: Option<[u8; 32]>,
    /// The largest payload accepted.
    max: u32,
}

/// The records read from a file's bytes.
#[derive(Debug, PartialEq, Eq)]
pub struct Decoded<'a> {
    /// The payloads, in file order.
    pub records: Vec<&'a [u8]>,
    /// Bytes of the file that hold whole, verified records; anything after
    /// is a torn or corrupt tail.
    pub valid: usize,
}

// === impl Codec ===

impl Codec {
    /// A codec checking with a plain BLAKE3 checksum, payloads up to `max`
    /// bytes.
    pub fn checksum(max: u32) -> Self {
        Self { key: None, max }
    }

    /// A codec checking with a BLAKE3 MAC under `key`, payloads up to `max`
    /// bytes: a record made under another key does not verify.
    pub fn keyed(key: [u8; 32], max: u32) -> Self {
        Self {
            key: Some(key),
            max,
        }
    }

    /// The largest payload this codec writes or reads.
    pub fn max(&self) -> u32 {
        self.max
    }

    /// Appends `payload` as one record to `out`. A payload that is empty
    /// or larger than the maximum is not written; returns whether it was.
    pub fn encode(&self, payload: &[u8], out: &mut Vec<u8>) -> bool {
        let Some(len) = u32::try_from(payload.len())
            .ok()
            .filter(|l| (1..=self.max).contains(l))
        else {
            return false;
        };
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&self.check(len, payload));
        out.extend_from_slice(payload);
        true
    }

    /// The whole, verified records at the start of `bytes`.
    pub fn decode<'a>(&self, bytes: &'a [u8]) -> Decoded<'a> {
        let mut records = Vec::new();
        let mut at = 0;
        while let Some((payload, next)) = self.one(bytes, at) {
            records.push(payload);
            at = next;
        }
        Decoded { records, valid: at }
    }

    /// The record at `at`, and where the next one starts.
    fn one<'a>(&self, bytes: &'a [u8], at: usize) -> Option<(&'a [u8], usize)> {
        let head = bytes.get(at..at.checked_add(HEADER)?)?;
        let len = u32::from_le_bytes(head.get(..4)?.try_into().ok()?);
        if !(1..=self.max).contains(&len) {
            return None;
        }
        let start = at + HEADER;
        let end = start.checked_add(usize::try_from(len).ok()?)?;
        let payload = bytes.get(start..end)?;
        let expected = self.check(len, payload);
        // Equal length; a timing difference here tells an attacker who can
        // already read the file nothing it does not have.
        (head.get(4..)? == expected.as_slice()).then_some((payload, end))
    }

    fn check(&self, len: u32, payload: &[u8]) -> [u8; CHECK] {
        let mut h = match &self.key {
            Some(key) => blake3::Hasher::new_keyed(key),
            None => blake3::Hasher::new(),
        };
        h.update(&len.to_le_bytes());
        h.update(payload);
        let mut out = [0u8; CHECK];
        h.finalize_xof().fill(&mut out);
        out
    }
}

impl std::fmt::Debug for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Codec")
            .field("keyed", &self.key.is_some())
            .field("max", &self.max)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use proptest::prelude::*;

    fn file(codec: &Codec, payloads: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in payloads {
            assert!(codec.encode(p, &mut out));
        }
        out
    }

    #[test]
    fn reads_back_what_was_written() {
        let codec = Codec::checksum(1024);
        let payloads = vec![b"one".to_vec(), vec![7u8; 1024], b"x".to_vec()];
        let bytes = file(&codec, &payloads);
        let d = codec.decode(&bytes);
        assert_eq!(
            d.records,
            payloads.iter().map(Vec::as_slice).collect::<Vec<_>>()
        );
        assert_eq!(d.valid, bytes.len());
    }

    #[test]
    fn refuses_to_write_empty_or_oversized_payloads() {
        let codec = Codec::checksum(4);
        let mut out = Vec::new();
        assert!(!codec.encode(b"", &mut out));
        assert!(!codec.encode(b"12345", &mut out));
        assert!(out.is_empty());
    }

    #[test]
    fn a_torn_tail_is_cut_at_the_last_whole_record() {
        let codec = Codec::checksum(1024);
        let bytes = file(&codec, &[b"first".to_vec(), b"second".to_vec()]);
        let first_end = HEADER + 5;
        for cut in first_end..bytes.len() {
            let d = codec.decode(bytes.get(..cut).unwrap());
            assert_eq!(d.records, vec![b"first".as_slice()], "cut at {cut}");
            assert_eq!(d.valid, first_end);
        }
    }

    #[test]
    fn a_flipped_bit_ends_the_valid_prefix_there() {
        let codec = Codec::checksum(1024);
        let bytes = file(
            &codec,
            &[b"first".to_vec(), b"second".to_vec(), b"third".to_vec()],
        );
        let second = HEADER + 5;
        for i in second..second + HEADER + 6 {
            let mut bad = bytes.clone();
            *bad.get_mut(i).unwrap() ^= 0x10;
            let d = codec.decode(&bad);
            // Nothing after the bad record is read, the third included.
            assert_eq!(d.records, vec![b"first".as_slice()], "flip at {i}");
            assert_eq!(d.valid, second);
        }
    }

    #[test]
    fn zeros_after_the_end_are_not_records() {
        let codec = Codec::checksum(1024);
        let mut bytes = file(&codec, &[b"only".to_vec()]);
        let end = bytes.len();
        bytes.extend_from_slice(&[0u8; 4096]);
        let d = codec.decode(&bytes);
        assert_eq!(d.records.len(), 1);
        assert_eq!(d.valid, end);
    }

    #[test]
    fn a_record_made_under_another_key_does_not_verify() {
        let bytes = file(&Codec::keyed([1; 32], 64), &[b"revoke".to_vec()]);
        assert_eq!(Codec::keyed([1; 32], 64).decode(&bytes).records.len(), 1);
        let other = Codec::keyed([2; 32], 64).decode(&bytes);
        assert!(other.records.is_empty());
        assert_eq!(other.valid, 0);
        assert_eq!(Codec::checksum(64).decode(&bytes).valid, 0);
    }

    proptest! {
        /// Any bytes: no panic, the valid prefix is made of the records
        /// returned, and decoding it again gives the same.
        #[test]
        fn any_bytes_decode_to_a_consistent_prefix(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let codec = Codec::checksum(256);
            let d = codec.decode(&bytes);
            prop_assert!(d.valid <= bytes.len());
            let total: usize = d.records.iter().map(|r| r.len() + HEADER).sum();
            prop_assert_eq!(total, d.valid);
            let again = codec.decode(bytes.get(..d.valid).unwrap());
            prop_assert_eq!(again.records, d.records);
        }

        /// Written records followed by any tail: every written record is
        /// read back, in order, whatever the tail holds.
        #[test]
        fn written_records_survive_any_tail(
            payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..64), 0..8),
            tail in proptest::collection::vec(any::<u8>(), 0..256),
            cut in any::<prop::sample::Index>(),
        ) {
            let codec = Codec::checksum(64);
            let mut bytes = file(&codec, &payloads);
            let whole = bytes.len();
            bytes.extend_from_slice(&tail);
            let d = codec.decode(&bytes);
            prop_assert!(d.records.len() >= payloads.len());
            for (got, want) in d.records.iter().zip(&payloads) {
                prop_assert_eq!(*got, want.as_slice());
            }
            // Torn anywhere inside the written records: a prefix of them.
            let cut = cut.index(whole + 1);
            let torn = codec.decode(bytes.get(..cut).unwrap());
            prop_assert!(torn.records.len() <= payloads.len());
            for (got, want) in torn.records.iter().zip(&payloads) {
                prop_assert_eq!(*got, want.as_slice());
            }
        }
    }
}
