//! Vectors and properties for the JA4 parser and fingerprint.
//!
//! Where the expected values come from:
//!
//! - `XARGS`: the ClientHello of "The Illustrated TLS 1.3 Connection"
//!   (tls13.xargs.org), record layer included. `a` worked out by hand from
//!   the specification (4 ciphers, 10 extensions, SNI, no ALPN); `b` and `c`
//!   and all four forms agree with `ja4plus` 1.4.0 (PyPI) fed the same bytes.
//! - `CHROME`: a Chrome-shaped hello built for these tests (GREASE cipher,
//!   extensions, supported version and key share, X25519MLKEM768, ECH,
//!   1740 bytes) with Chrome's cipher, extension and signature algorithm
//!   lists. Values from `ja4plus` 1.4.0; `ja4` and `ja4_o` also equal the
//!   values browserleaks.com publishes for Chrome 143 with the same lists.
//! - `TLS12`, `NO_SIGALGS`, `GREASE_SIGALGS`, `ONLY_SNI_ALPN`: built for these
//!   tests; every form agrees with `ja4plus` 1.4.0.
//! - `spec_example`: the worked example of the JA4 specification
//!   (`technical_details/JA4.md`), whose strings and hashes it prints; also
//!   confirmed with `ja4plus`, as are the hand-built hellos of
//!   `empty_first_alpn_and_versions_table` and `counts_cap_at_99`.
//! - `alpn_rules_from_the_spec`: the specification's own examples. `ja4plus`
//!   1.4.0 disagrees for non-alphanumeric ends (it prints `09` for
//!   `0x30 0xab` where the specification says `3b`); we follow the
//!   specification.

use proptest::prelude::*;

use super::*;

const XARGS: &str = "16030100f8010000f40303000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20e0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff000813021303130100ff010000a30000001800160000136578616d706c652e756c666865696d2e6e6574000b000403000102000a00160014001d0017001e0019001801000101010201030104002300000016000000170000000d001e001c040305030603080708080809080a080b080408050806040105010601002b0003020304002d00020101003300260024001d0020358072d6365880d1aeea329adf9121383851ed21a28e3b75e965d0d2cd166254";
const CHROME: &str = "16030106c7010006c30303000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20111111111111111111111111111111111111111111111111111111111111111100203a3a130113021303c02bc02fc02cc030cca9cca8c013c014009c009d002f00350100065adada0000002d00020101003304ef04ed4a4a00010011ec04c000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000001d002000000000000000000000000000000000000000000000000000000000000000000010000e000c02683208687474702f312e31fe0d00c800000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000017000044cd0005000302683200000014001200000f7777772e6578616d706c652e636f6d000b00020100000a000c000a4a4a11ec001d00170018002b0007062a2a03040303ff010001000023000000120000000500050100000000000d0012001004030804040105030805050108060601001b0004000200021a1a000100";
/// `CHROME` resuming: padding (21), cookie (44), early_data (42) and
/// pre_shared_key (40 bytes of zeros, last) appended.
const CHROME_RESUMED: &str = "160301070d010007090303000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20111111111111111111111111111111111111111111111111111111111111111100203a3a130113021303c02bc02fc02cc030cca9cca8c013c014009c009d002f0035010006a0dada0000002d00020101003304ef04ed4a4a00010011ec04c000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000001d002000000000000000000000000000000000000000000000000000000000000000000010000e000c02683208687474702f312e31fe0d00c800000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000017000044cd0005000302683200000014001200000f7777772e6578616d706c652e636f6d000b00020100000a000c000a4a4a11ec001d00170018002b0007062a2a03040303ff010001000023000000120000000500050100000000000d0012001004030804040105030805050108060601001b0004000200021a1a000100001500080000000000000000002c0006000401020304002a00000029002800000000000000000000000000000000000000000000000000000000000000000000000000000000";
const TLS12: &str = "1603010069010000650303000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f00000ac02fc030009e00ff0a0a01000032000b00020100000a000600040017001800230000000d00120010060106030501050304010403020102030016000000170000";
const NO_SIGALGS: &str = "160301009e0100009a0303000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f201111111111111111111111111111111111111111111111111111111111111111000213010100004f0000000b0009000006612e746573740010000b000908687474702f312e31002b0003020304003300260024001d00200000000000000000000000000000000000000000000000000000000000000000";
const GREASE_SIGALGS: &str = "160301006e0100006a0303000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f2011111111111111111111111111111111111111111111111111111111111111110004130113020100001d002b0005040304fafa000d000800060a0a08040403000a00040002001d";
const ONLY_SNI_ALPN: &str = "1603010067010000630301000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f2011111111111111111111111111111111111111111111111111111111111111110002002f010000180000000b0009000006782e74657374001000050003026832";

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// The handshake message inside a single-record vector.
fn message(records: &[u8]) -> &[u8] {
    &records[5..]
}

/// Re-frames a handshake message into records of at most `size` bytes.
fn reframe(msg: &[u8], size: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in msg.chunks(size) {
        out.extend_from_slice(&[22, 3, 1]);
        out.extend_from_slice(&u16::try_from(chunk.len()).unwrap().to_be_bytes());
        out.extend_from_slice(chunk);
    }
    out
}

struct Expect {
    ja4: &'static str,
    ja4_o: &'static str,
    ja4_r: &'static str,
    ja4_ro: &'static str,
}

fn check(hex: &str, want: &Expect) {
    let bytes = unhex(hex);
    let hello = ClientHello::from_records(&bytes).unwrap();
    let t = Transport::Tcp;
    assert_eq!(ja4(&hello, t).to_string(), want.ja4);
    assert_eq!(ja4_o(&hello, t).to_string(), want.ja4_o);
    assert_eq!(ja4_r(&hello, t), want.ja4_r);
    assert_eq!(ja4_ro(&hello, t), want.ja4_ro);
    // The bare handshake message gives the same hello.
    assert_eq!(ClientHello::from_handshake(message(&bytes)).unwrap(), hello);
}

#[test]
fn xargs_illustrated_tls13() {
    check(
        XARGS,
        &Expect {
            ja4: "t13d041000_16476d049b0b_78f1d400d464",
            ja4_o: "t13d041000_b9c790168325_2ce11668703f",
            ja4_r: "t13d041000_00ff,1301,1302,1303_000a,000b,000d,0016,0017,0023,002b,002d,0033_0403,0503,0603,0807,0808,0809,080a,080b,0804,0805,0806,0401,0501,0601",
            ja4_ro: "t13d041000_1302,1303,1301,00ff_0000,000b,000a,0023,0016,0017,000d,002b,002d,0033_0403,0503,0603,0807,0808,0809,080a,080b,0804,0805,0806,0401,0501,0601",
        },
    );
}

#[test]
fn chrome_with_grease() {
    check(
        CHROME,
        &Expect {
            ja4: "t13d1516h2_8daaf6152771_d8a2da3f94cd",
            ja4_o: "t13d1516h2_acb858a92679_f96a17c57971",
            ja4_r: "t13d1516h2_002f,0035,009c,009d,1301,1302,1303,c013,c014,c02b,c02c,c02f,c030,cca8,cca9_0005,000a,000b,000d,0012,0017,001b,0023,002b,002d,0033,44cd,fe0d,ff01_0403,0804,0401,0503,0805,0501,0806,0601",
            ja4_ro: "t13d1516h2_1301,1302,1303,c02b,c02f,c02c,c030,cca9,cca8,c013,c014,009c,009d,002f,0035_002d,0033,0010,fe0d,0017,44cd,0000,000b,000a,002b,ff01,0023,0012,0005,000d,001b_0403,0804,0401,0503,0805,0501,0806,0601",
        },
    );
    let hello = ClientHello::from_records(&unhex(CHROME)).unwrap();
    assert_eq!(hello.version(), 0x0304);
    assert_eq!(hello.alpn(), &[b"h2".to_vec(), b"http/1.1".to_vec()]);
    assert!(
        hello.ciphers().contains(&0x3a3a),
        "GREASE kept in the parsed hello"
    );
}

#[test]
fn tls12_without_supported_versions_sni_or_alpn() {
    check(
        TLS12,
        &Expect {
            ja4: "t12i040600_9c0314f64b5a_528691675ab3",
            ja4_o: "t12i040600_26b695d90dd8_c8a06b627c14",
            ja4_r: "t12i040600_009e,00ff,c02f,c030_000a,000b,000d,0016,0017,0023_0601,0603,0501,0503,0401,0403,0201,0203",
            ja4_ro: "t12i040600_c02f,c030,009e,00ff_000b,000a,0023,000d,0016,0017_0601,0603,0501,0503,0401,0403,0201,0203",
        },
    );
}

#[test]
fn no_signature_algorithms_means_no_underscore() {
    check(
        NO_SIGALGS,
        &Expect {
            ja4: "t13d0104h1_0f2cb44170f4_a56c5b993250",
            ja4_o: "t13d0104h1_0f2cb44170f4_dd3f0ecec8f2",
            ja4_r: "t13d0104h1_1301_002b,0033",
            ja4_ro: "t13d0104h1_1301_0000,0010,002b,0033",
        },
    );
}

#[test]
fn grease_in_versions_and_signature_algorithms() {
    check(
        GREASE_SIGALGS,
        &Expect {
            ja4: "t13i020300_62ed6f6ca7ad_47b461364fc6",
            ja4_o: "t13i020300_62ed6f6ca7ad_3c304b7b6488",
            ja4_r: "t13i020300_1301,1302_000a,000d,002b_0804,0403",
            ja4_ro: "t13i020300_1301,1302_002b,000d,000a_0804,0403",
        },
    );
}

#[test]
fn only_sni_and_alpn_zero_c() {
    check(
        ONLY_SNI_ALPN,
        &Expect {
            ja4: "t10d0102h2_ba72b8082249_000000000000",
            ja4_o: "t10d0102h2_ba72b8082249_000000000000",
            ja4_r: "t10d0102h2_002f_",
            ja4_ro: "t10d0102h2_002f_0000,0010",
        },
    );
}

/// A resumed Chrome hello: the same ClientHello with pre_shared_key (41,
/// last, as RFC 8446 requires) and early_data (42) added, and padding (21)
/// and a HelloRetryRequest cookie (44) as a stack may add them.
#[test]
fn a_resumed_hello_has_the_stable_form_of_its_full_hello() {
    let full = ClientHello::from_records(&unhex(CHROME)).unwrap();
    let t = Transport::Tcp;
    // Chrome's full hello has none of them: both forms are its JA4.
    assert_eq!(ja4_both(&full, t), (ja4(&full, t), ja4(&full, t)));
    assert_eq!(
        ja4_stable(&full, t).to_string(),
        "t13d1516h2_8daaf6152771_d8a2da3f94cd"
    );

    let rebuilt = |extra_first: &[u16], extra_last: &[u16]| {
        let mut exts: Vec<Vec<u8>> = extra_first.iter().map(|t| ext(*t, &[0; 4])).collect();
        // The full hello's extensions, bodies as sent.
        let msg = message(&unhex(CHROME)).to_vec();
        let h = ClientHello::from_handshake(&msg).unwrap();
        let mut r = Reader::new(&msg[HANDSHAKE_HEADER_LEN..]);
        r.take(2 + RANDOM_LEN, "").unwrap();
        r.vec8("").unwrap();
        r.vec16("").unwrap();
        r.vec8("").unwrap();
        let mut block = Reader::new(r.vec16("").unwrap());
        while !block.is_empty() {
            let ty = block.u16("").unwrap();
            exts.push(ext(ty, block.vec16("").unwrap()));
        }
        exts.extend(extra_last.iter().map(|t| ext(*t, &[0; 4])));
        ClientHello::from_handshake(&hello_msg(h.legacy_version(), h.ciphers(), Some(&exts)))
            .unwrap()
    };
    assert_eq!(ja4(&rebuilt(&[], &[]), t), ja4(&full, t));
    for (first, last) in [
        (&[][..], &[EXT_PRE_SHARED_KEY][..]),
        (&[EXT_EARLY_DATA], &[EXT_PRE_SHARED_KEY]),
        (
            &[EXT_PADDING, EXT_COOKIE],
            &[EXT_EARLY_DATA, EXT_PRE_SHARED_KEY],
        ),
    ] {
        let resumed = rebuilt(first, last);
        let (spec, stable) = ja4_both(&resumed, t);
        assert_ne!(spec, ja4(&full, t), "{first:?} {last:?}");
        assert_eq!(stable, ja4_stable(&full, t), "{first:?} {last:?}");
        // The spec form counts them: 16 extensions plus the added ones.
        let n = 16 + first.len() + last.len();
        assert_eq!(&spec.a()[6..8], format!("{n:02}"));
        assert_eq!(&stable.a()[6..8], "16");
    }
    // Another extension is another client, resumed or not.
    let other = rebuilt(&[0x001c], &[EXT_PRE_SHARED_KEY]);
    assert_ne!(ja4_stable(&other, t), ja4_stable(&full, t));

    // The same in records, as the proxy reads them (and as the fuzz seeds
    // `seed-chrome_resumed-*` hold it).
    let resumed = ClientHello::from_records(&unhex(CHROME_RESUMED)).unwrap();
    assert_eq!(
        ja4(&resumed, t).to_string(),
        format!("t13d1520h2_8daaf6152771_{}", hex6(ja4(&resumed, t).c()))
    );
    assert_eq!(ja4_both(&resumed, t), (ja4(&resumed, t), ja4(&full, t)));
}

fn hex6(c: [u8; 6]) -> String {
    c.iter().map(|b| format!("{b:02x}")).collect()
}

// --- a small ClientHello encoder for hand-made and generated hellos ---

fn ext(ty: u16, data: &[u8]) -> Vec<u8> {
    let mut out = ty.to_be_bytes().to_vec();
    out.extend_from_slice(&u16::try_from(data.len()).unwrap().to_be_bytes());
    out.extend_from_slice(data);
    out
}

fn list16(values: &[u16]) -> Vec<u8> {
    let mut out = u16::try_from(values.len() * 2)
        .unwrap()
        .to_be_bytes()
        .to_vec();
    for v in values {
        out.extend_from_slice(&v.to_be_bytes());
    }
    out
}

fn versions_ext(versions: &[u16]) -> Vec<u8> {
    let mut data = vec![u8::try_from(versions.len() * 2).unwrap()];
    for v in versions {
        data.extend_from_slice(&v.to_be_bytes());
    }
    ext(EXT_SUPPORTED_VERSIONS, &data)
}

fn alpn_ext(names: &[&[u8]]) -> Vec<u8> {
    let mut inner = Vec::new();
    for n in names {
        inner.push(u8::try_from(n.len()).unwrap());
        inner.extend_from_slice(n);
    }
    let mut data = u16::try_from(inner.len()).unwrap().to_be_bytes().to_vec();
    data.extend_from_slice(&inner);
    ext(EXT_ALPN, &data)
}

/// A ClientHello handshake message; `exts` of `None` omits the block.
fn hello_msg(version: u16, ciphers: &[u16], exts: Option<&[Vec<u8>]>) -> Vec<u8> {
    let mut body = version.to_be_bytes().to_vec();
    body.extend_from_slice(&[7; 32]);
    body.push(0);
    body.extend_from_slice(&list16(ciphers));
    body.extend_from_slice(&[1, 0]);
    if let Some(exts) = exts {
        let all: Vec<u8> = exts.concat();
        body.extend_from_slice(&u16::try_from(all.len()).unwrap().to_be_bytes());
        body.extend_from_slice(&all);
    }
    let mut msg = vec![1];
    msg.extend_from_slice(&u32::try_from(body.len()).unwrap().to_be_bytes()[1..]);
    msg.extend_from_slice(&body);
    msg
}

#[test]
fn spec_example() {
    let ciphers = [
        0x1301, 0x1302, 0x1303, 0xc02b, 0xc02f, 0xc02c, 0xc030, 0xcca9, 0xcca8, 0xc013, 0xc014,
        0x009c, 0x009d, 0x002f, 0x0035,
    ];
    let sigalgs = [
        0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601,
    ];
    let exts = |sigalgs: &[u16]| -> Vec<Vec<u8>> {
        [
            0x001b, 0x0000, 0x0033, 0x0010, 0x4469, 0x0017, 0x002d, 0x000d, 0x0005, 0x0023, 0x0012,
            0x002b, 0xff01, 0x000b, 0x000a, 0x0015,
        ]
        .iter()
        .map(|&ty| match ty {
            EXT_ALPN => alpn_ext(&[b"h2", b"http/1.1"]),
            EXT_SUPPORTED_VERSIONS => versions_ext(&[0x0304, 0x0303]),
            EXT_SIGNATURE_ALGORITHMS => ext(ty, &list16(sigalgs)),
            _ => ext(ty, &[]),
        })
        .collect()
    };
    let msg = hello_msg(0x0303, &ciphers, Some(&exts(&sigalgs)));
    let hello = ClientHello::from_handshake(&msg).unwrap();
    assert_eq!(
        ja4(&hello, Transport::Tcp).to_string(),
        "t13d1516h2_8daaf6152771_e5627efa2ab1"
    );
    assert_eq!(
        ja4_o(&hello, Transport::Tcp).to_string(),
        "t13d1516h2_acb858a92679_18f69afefd3d"
    );
    assert_eq!(
        ja4_r(&hello, Transport::Tcp),
        "t13d1516h2_002f,0035,009c,009d,1301,1302,1303,c013,c014,c02b,c02c,c02f,c030,cca8,cca9_0005,000a,000b,000d,0012,0015,0017,001b,0023,002b,002d,0033,4469,ff01_0403,0804,0401,0503,0805,0501,0806,0601"
    );
    assert_eq!(
        ja4_ro(&hello, Transport::Tcp),
        "t13d1516h2_1301,1302,1303,c02b,c02f,c02c,c030,cca9,cca8,c013,c014,009c,009d,002f,0035_001b,0000,0033,0010,4469,0017,002d,000d,0005,0023,0012,002b,ff01,000b,000a,0015_0403,0804,0401,0503,0805,0501,0806,0601"
    );
    assert_eq!(ja4(&hello, Transport::Quic).a(), "q13d1516h2");

    // The specification's "no signature algorithms" string: same list, no `_`.
    let msg = hello_msg(0x0303, &ciphers, Some(&exts(&[])));
    let hello = ClientHello::from_handshake(&msg).unwrap();
    let fp = ja4(&hello, Transport::Tcp);
    assert_eq!(fp.to_string(), "t13d1516h2_8daaf6152771_6d807ffa2a79");
    assert_eq!(fp.b(), [0x8d, 0xaa, 0xf6, 0x15, 0x27, 0x71]);
}

#[test]
fn alpn_rules_from_the_spec() {
    assert_eq!(&alpn_code(None), b"00");
    assert_eq!(&alpn_code(Some(b"")), b"00");
    assert_eq!(&alpn_code(Some(b"h2")), b"h2");
    assert_eq!(&alpn_code(Some(b"http/1.1")), b"h1");
    assert_eq!(&alpn_code(Some(b"x")), b"xx");
    assert_eq!(&alpn_code(Some(&[0xab])), b"ab");
    assert_eq!(&alpn_code(Some(&[0xab, 0xcd])), b"ad");
    assert_eq!(&alpn_code(Some(&[0x30, 0xab])), b"3b");
    assert_eq!(&alpn_code(Some(&[0x30, 0x31, 0xab, 0xcd])), b"3d");
    assert_eq!(&alpn_code(Some(&[0x30, 0xab, 0xcd, 0x31])), b"01");
}

#[test]
fn empty_first_alpn_and_versions_table() {
    let msg = hello_msg(0x0300, &[0x0a0a], Some(&[alpn_ext(&[b"", b"h2"])]));
    let hello = ClientHello::from_handshake(&msg).unwrap();
    assert_eq!(
        ja4(&hello, Transport::Tcp).to_string(),
        "ts3i000100_000000000000_000000000000"
    );
    assert_eq!(ja4_r(&hello, Transport::Tcp), "ts3i000100__");

    let msg = hello_msg(0x1234, &[0x002f], None);
    let hello = ClientHello::from_handshake(&msg).unwrap();
    assert!(hello.extensions().is_empty());
    assert_eq!(
        ja4(&hello, Transport::Tcp).to_string(),
        "t00i010000_ba72b8082249_000000000000"
    );

    // supported_versions holding only GREASE falls back to the legacy version.
    let msg = hello_msg(0x0301, &[0x002f], Some(&[versions_ext(&[0x7a7a])]));
    let hello = ClientHello::from_handshake(&msg).unwrap();
    assert_eq!(
        ja4(&hello, Transport::Tcp).to_string(),
        "t10i010100_ba72b8082249_b9a491fefe05"
    );
}

#[test]
fn counts_cap_at_99() {
    let ciphers: Vec<u16> = (1..=150).collect();
    let exts: Vec<Vec<u8>> = (0x100..0x100 + 120).map(|t| ext(t, &[])).collect();
    let hello = ClientHello::from_handshake(&hello_msg(0x0303, &ciphers, Some(&exts))).unwrap();
    assert_eq!(
        ja4(&hello, Transport::Tcp).to_string(),
        "t12i999900_2ddb91151f68_78cd3e4e4f62"
    );
}

#[test]
fn hello_split_over_records() {
    let msg = message(&unhex(CHROME)).to_vec();
    let want = ClientHello::from_handshake(&msg).unwrap();
    for size in [1, 2, 3, 4, 5, 100, 512, 1000, msg.len() - 1] {
        let records = reframe(&msg, size);
        assert_eq!(
            ClientHello::from_records(&records).unwrap(),
            want,
            "records of {size}"
        );
    }
    // Two records, and bytes after the hello are not read.
    let mut records = reframe(&msg, 1000);
    records.extend_from_slice(&[20, 3, 3, 0, 1, 1]);
    assert_eq!(ClientHello::from_records(&records).unwrap(), want);
}

#[test]
fn every_truncation_is_incomplete() {
    for hex in [XARGS, CHROME, TLS12, NO_SIGALGS] {
        let bytes = unhex(hex);
        for end in 0..bytes.len() {
            assert_eq!(
                ClientHello::from_records(&bytes[..end]),
                Err(HelloError::Incomplete),
                "record prefix of {end}"
            );
            if end > 5 {
                assert_eq!(
                    ClientHello::from_handshake(&bytes[5..end]),
                    Err(HelloError::Incomplete),
                    "message prefix of {}",
                    end - 5
                );
            }
        }
    }
    let split = reframe(message(&unhex(CHROME)), 300);
    for end in 0..split.len() {
        assert_eq!(
            ClientHello::from_records(&split[..end]),
            Err(HelloError::Incomplete)
        );
    }
    assert!(ClientHello::from_records(&split).is_ok());
}

#[test]
fn malformed_input() {
    let bad = |bytes: &[u8]| match ClientHello::from_records(bytes) {
        Err(HelloError::Malformed(m)) => m,
        other => panic!("expected Malformed, got {other:?}"),
    };
    assert_eq!(
        bad(b"GET / HTTP/1.1\r\n"),
        Malformed::NotHandshakeRecord(b'G')
    );
    assert_eq!(bad(&[22, 4]), Malformed::NotTls(4));
    assert_eq!(bad(&[22, 3, 1, 0, 0]), Malformed::EmptyRecord);
    assert_eq!(bad(&[22, 3, 1, 0x40, 1]), Malformed::RecordTooLong(0x4001));
    assert_eq!(
        bad(&[22, 3, 1, 0, 4, 2, 0, 0, 0]),
        Malformed::NotClientHello(2)
    );
    assert_eq!(
        bad(&[22, 3, 1, 0, 4, 1, 1, 0, 0]),
        Malformed::TooLong {
            len: 0x10000,
            limit: MAX_HELLO_BYTES
        }
    );
    // A record of another type in the middle of the hello.
    let mut records = reframe(message(&unhex(CHROME)), 1000);
    records[1005] = 23;
    assert_eq!(bad(&records), Malformed::NotHandshakeRecord(23));

    let msg = message(&unhex(XARGS)).to_vec();
    assert_eq!(
        ClientHello::from_handshake_capped(&msg, 100),
        Err(HelloError::Malformed(Malformed::TooLong {
            len: msg.len() - 4,
            limit: 100
        }))
    );
    // Odd cipher list: bump its length (at 4 + 2 + 32 + 1 + 32 session id).
    let mut odd = msg.clone();
    odd[4 + 2 + 32 + 1 + 32 + 1] += 1;
    assert!(matches!(
        ClientHello::from_handshake(&odd),
        Err(HelloError::Malformed(_))
    ));
    // Extensions block longer than the message.
    let mut long = msg.clone();
    let ext_len_at = 4 + 2 + 32 + 1 + 32 + 2 + 8 + 2;
    long[ext_len_at] = 0xff;
    assert_eq!(
        ClientHello::from_handshake(&long),
        Err(HelloError::Malformed(Malformed::Overrun("extensions")))
    );
    // Bad inner ALPN framing.
    let msg = hello_msg(
        0x0303,
        &[0x1301],
        Some(&[ext(EXT_ALPN, &[0, 3, 5, b'h', b'2'])]),
    );
    assert_eq!(
        ClientHello::from_handshake(&msg),
        Err(HelloError::Malformed(Malformed::Overrun("alpn_protocol")))
    );
    let msg = hello_msg(
        0x0303,
        &[0x1301],
        Some(&[ext(EXT_SUPPORTED_VERSIONS, &[3, 3, 4, 3])]),
    );
    assert_eq!(
        ClientHello::from_handshake(&msg),
        Err(HelloError::Malformed(Malformed::OddLength(
            "supported_versions"
        )))
    );
    assert_eq!(
        ClientHello::from_handshake(&[0x16, 3, 1]),
        Err(HelloError::Malformed(Malformed::NotClientHello(0x16)))
    );
}

#[test]
fn grease_detection() {
    let grease: Vec<u16> = (0..=0xffff_u16).filter(|v| is_grease(*v)).collect();
    assert_eq!(grease.len(), 16);
    assert_eq!(grease[0], 0x0a0a);
    assert_eq!(grease[15], 0xfafa);
    assert!(grease.iter().all(|v| v & 0x0f0f == 0x0a0a));
}

// --- properties ---

const GREASE: [u16; 16] = [
    0x0a0a, 0x1a1a, 0x2a2a, 0x3a3a, 0x4a4a, 0x5a5a, 0x6a6a, 0x7a7a, 0x8a8a, 0x9a9a, 0xaaaa, 0xbaba,
    0xcaca, 0xdada, 0xeaea, 0xfafa,
];

fn non_grease() -> impl Strategy<Value = u16> {
    any::<u16>().prop_filter("not GREASE", |v| !is_grease(*v))
}

/// The parts of a generated hello, GREASE-free.
#[derive(Debug, Clone)]
struct Parts {
    ciphers: Vec<u16>,
    /// Extension types other than the four JA4 reads, distinct.
    others: Vec<u16>,
    sni: bool,
    alpn: Option<Vec<u8>>,
    versions: Vec<u16>,
    sigalgs: Vec<u16>,
}

fn parts() -> impl Strategy<Value = Parts> {
    (
        prop::collection::vec(non_grease(), 0..30),
        prop::collection::btree_set(
            non_grease().prop_filter("not read by JA4", |t| {
                ![
                    EXT_SERVER_NAME,
                    EXT_ALPN,
                    EXT_SUPPORTED_VERSIONS,
                    EXT_SIGNATURE_ALGORITHMS,
                ]
                .contains(t)
            }),
            0..20,
        ),
        any::<bool>(),
        prop::option::of(prop::collection::vec(any::<u8>(), 0..8)),
        prop::collection::vec(non_grease(), 0..4),
        prop::collection::vec(non_grease(), 0..12),
    )
        .prop_map(|(ciphers, others, sni, alpn, versions, sigalgs)| Parts {
            ciphers,
            others: others.into_iter().collect(),
            sni,
            alpn,
            versions,
            sigalgs,
        })
}

impl Parts {
    /// The extensions in a fixed order: others, then the ones JA4 reads.
    fn extensions(&self) -> Vec<Vec<u8>> {
        let mut exts: Vec<Vec<u8>> = self.others.iter().map(|t| ext(*t, &[1, 2])).collect();
        if self.sni {
            exts.push(ext(EXT_SERVER_NAME, &[]));
        }
        if let Some(name) = &self.alpn {
            exts.push(alpn_ext(&[name]));
        }
        if !self.versions.is_empty() {
            exts.push(versions_ext(&self.versions));
        }
        if !self.sigalgs.is_empty() {
            exts.push(ext(EXT_SIGNATURE_ALGORITHMS, &list16(&self.sigalgs)));
        }
        exts
    }

    fn encode(&self, ciphers: &[u16], exts: &[Vec<u8>]) -> Vec<u8> {
        hello_msg(0x0303, ciphers, Some(exts))
    }
}

/// Inserts `GREASE[g % 16]` at `at % (len + 1)` for each pair.
fn sprinkle(list: &[u16], inserts: &[(usize, usize)]) -> Vec<u16> {
    let mut out = list.to_vec();
    for &(at, g) in inserts {
        out.insert(at % (out.len() + 1), GREASE[g % 16]);
    }
    out
}

fn inserts() -> impl Strategy<Value = Vec<(usize, usize)>> {
    prop::collection::vec((any::<usize>(), any::<usize>()), 0..4)
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = ClientHello::from_records(&bytes);
        let _ = ClientHello::from_handshake(&bytes);
        // Past the record and handshake headers, into the body parser.
        let mut framed = vec![22, 3, 1];
        framed.extend_from_slice(&u16::try_from(bytes.len() + 4).unwrap().to_be_bytes());
        framed.extend_from_slice(&[1, 0]);
        framed.extend_from_slice(&u16::try_from(bytes.len()).unwrap().to_be_bytes());
        framed.extend_from_slice(&bytes);
        if let Ok(hello) = ClientHello::from_records(&framed) {
            let _ = ja4(&hello, Transport::Tcp).to_string();
            let _ = ja4_ro(&hello, Transport::Quic);
            let (spec, _) = ja4_both(&hello, Transport::Tcp);
            prop_assert_eq!(spec, ja4(&hello, Transport::Tcp));
        }
    }

    #[test]
    fn grease_never_changes_the_fingerprint(
        p in parts(),
        in_ciphers in inserts(),
        in_exts in inserts(),
        in_versions in inserts(),
        in_sigalgs in inserts(),
    ) {
        let plain = ClientHello::from_handshake(&p.encode(&p.ciphers, &p.extensions())).unwrap();

        // GREASE goes into lists that are there: GREASE alone in a new
        // supported_versions or signature_algorithms extension would add
        // that (non-GREASE) extension.
        let mut greased = p.clone();
        if !p.versions.is_empty() {
            greased.versions = sprinkle(&p.versions, &in_versions);
        }
        if !p.sigalgs.is_empty() {
            greased.sigalgs = sprinkle(&p.sigalgs, &in_sigalgs);
        }
        let mut exts = greased.extensions();
        for &(at, g) in &in_exts {
            exts.insert(at % (exts.len() + 1), ext(GREASE[g % 16], &[0]));
        }
        let msg = greased.encode(&sprinkle(&p.ciphers, &in_ciphers), &exts);
        let hello = ClientHello::from_handshake(&msg).unwrap();

        for t in [Transport::Tcp, Transport::Quic] {
            prop_assert_eq!(ja4(&hello, t), ja4(&plain, t));
            prop_assert_eq!(ja4_o(&hello, t), ja4_o(&plain, t));
            prop_assert_eq!(ja4_r(&hello, t), ja4_r(&plain, t));
            prop_assert_eq!(ja4_ro(&hello, t), ja4_ro(&plain, t));
            prop_assert_eq!(ja4_stable(&hello, t), ja4_stable(&plain, t));
        }
    }

    /// A hello with any of the resumption extensions added anywhere (what a
    /// resuming client sends) has the stable form of the hello without
    /// them; its spec JA4 is the one that moves, and one pass gives both.
    #[test]
    fn resumption_extensions_never_change_the_stable_form(
        p in parts().prop_filter("no resumption extension", |p| {
            !p.others.iter().any(|t| RESUMPTION_EXTENSIONS.contains(t))
        }),
        added in prop::collection::vec((any::<usize>(), 0usize..4), 1..5),
    ) {
        let full = ClientHello::from_handshake(&p.encode(&p.ciphers, &p.extensions())).unwrap();
        let mut exts = p.extensions();
        for &(at, which) in &added {
            exts.insert(at % (exts.len() + 1), ext(RESUMPTION_EXTENSIONS[which], &[0, 0]));
        }
        let resumed = ClientHello::from_handshake(&p.encode(&p.ciphers, &exts)).unwrap();
        for t in [Transport::Tcp, Transport::Quic] {
            // Without them the two forms are one.
            prop_assert_eq!(ja4_both(&full, t), (ja4(&full, t), ja4(&full, t)));
            prop_assert_eq!(ja4_stable(&resumed, t), ja4(&full, t));
            prop_assert_ne!(ja4(&resumed, t), ja4(&full, t));
            prop_assert_eq!(ja4_both(&resumed, t), (ja4(&resumed, t), ja4(&full, t)));
            // Only the extension count and `c` move: the same family.
            prop_assert!(ja4(&resumed, t).same_family(&ja4_stable(&resumed, t)));
        }
    }

    /// The attacker's side: a hello that differs from the owner's in
    /// anything but the resumption extensions — one more extension, a
    /// cipher, a signature algorithm — has another stable form, with or
    /// without resumption extensions of its own.
    #[test]
    fn anything_else_still_changes_the_stable_form(
        p in parts(),
        extra in non_grease().prop_filter("a new extension", |t| {
            !RESUMPTION_EXTENSIONS.contains(t)
                && ![EXT_SERVER_NAME, EXT_ALPN, EXT_SUPPORTED_VERSIONS, EXT_SIGNATURE_ALGORITHMS]
                    .contains(t)
        }),
        cipher in non_grease(),
        sigalg in non_grease(),
        resumed in any::<bool>(),
    ) {
        let t = Transport::Tcp;
        let owner = ClientHello::from_handshake(&p.encode(&p.ciphers, &p.extensions())).unwrap();
        let owner = ja4_stable(&owner, t);
        let with_psk = |mut exts: Vec<Vec<u8>>| {
            if resumed {
                exts.push(ext(EXT_PRE_SHARED_KEY, &[0, 0]));
            }
            exts
        };
        if !p.others.contains(&extra) {
            let mut exts = p.extensions();
            exts.insert(0, ext(extra, &[]));
            let h = ClientHello::from_handshake(&p.encode(&p.ciphers, &with_psk(exts))).unwrap();
            prop_assert_ne!(ja4_stable(&h, t), owner);
        }
        if !p.ciphers.contains(&cipher) {
            let mut ciphers = p.ciphers.clone();
            ciphers.push(cipher);
            let h = ClientHello::from_handshake(&p.encode(&ciphers, &with_psk(p.extensions()))).unwrap();
            prop_assert_ne!(ja4_stable(&h, t), owner);
        }
        if !p.sigalgs.is_empty() {
            let mut q = p.clone();
            q.sigalgs.push(sigalg);
            let h = ClientHello::from_handshake(&q.encode(&q.ciphers, &with_psk(q.extensions()))).unwrap();
            prop_assert_ne!(ja4_stable(&h, t), owner);
        }
    }

    #[test]
    fn order_changes_only_the_original_forms(
        (p, ciphers, exts) in parts().prop_flat_map(|p| {
            let exts = p.extensions();
            (Just(p.clone()), Just(p.ciphers).prop_shuffle(), Just(exts).prop_shuffle())
        }),
    ) {
        let plain = ClientHello::from_handshake(&p.encode(&p.ciphers, &p.extensions())).unwrap();
        let shuffled = ClientHello::from_handshake(&p.encode(&ciphers, &exts)).unwrap();
        let t = Transport::Tcp;
        prop_assert_eq!(ja4(&shuffled, t), ja4(&plain, t));
        prop_assert_eq!(ja4_r(&shuffled, t), ja4_r(&plain, t));
        if shuffled.ciphers() != plain.ciphers() {
            prop_assert_ne!(ja4_o(&shuffled, t).b(), ja4_o(&plain, t).b());
        }
        if shuffled.extensions() != plain.extensions() && has_hashed_extensions(&plain) {
            prop_assert_ne!(ja4_o(&shuffled, t).c(), ja4_o(&plain, t).c());
        }
    }
}
