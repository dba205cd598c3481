//! The GRO receive split: whatever length and segment size the kernel reports, the datagrams cut
//! from a receive buffer lie inside it, in order, without gaps, and add up to its length.
#![no_main]

use libfuzzer_sys::fuzz_target;
use udptun::udp;

/// Longest buffer tried: two GRO buffers' worth, so that tiny strides stay fast.
const MAX_LEN: usize = 2 * udp::GRO_BUFFER_BYTES;
/// The receive buffer (its contents do not matter, only its bounds).
static BUFFER: [u8; MAX_LEN] = [0; MAX_LEN];

fuzz_target!(|data: &[u8]| {
    // Bytes 0..4: the received length (little-endian, modulo MAX_LEN + 1); bytes 4..12: the
    // segment size, any 64-bit value (0 and huge ones included). Missing bytes are zeros.
    let mut raw = [0u8; 12];
    let n = data.len().min(raw.len());
    raw[..n].copy_from_slice(&data[..n]);
    let len = u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]) as usize % (MAX_LEN + 1);
    let stride = u64::from_le_bytes([raw[4], raw[5], raw[6], raw[7], raw[8], raw[9], raw[10], raw[11]]);
    let stride = usize::try_from(stride).unwrap_or(usize::MAX);
    let buffer = &BUFFER[..len];

    let mut pieces = udp::split_gro(len, stride).peekable();
    if len == 0 {
        // An empty receive is one empty datagram (a keepalive), not none.
        assert_eq!(pieces.collect::<Vec<_>>(), [0..0]);
        return;
    }
    let segment = stride.max(1);
    let mut end = 0;
    let mut total = 0;
    while let Some(piece) = pieces.next() {
        assert_eq!(piece.start, end, "pieces must be contiguous (len {len}, stride {stride})");
        let bytes = buffer.get(piece.clone()).expect("a piece outside the buffer");
        // Every datagram but the last is exactly one segment; the last is at most one and not
        // empty.
        if pieces.peek().is_some() {
            assert_eq!(bytes.len(), segment, "{piece:?} (len {len}, stride {stride})");
        } else {
            assert!((1..=segment).contains(&bytes.len()), "{piece:?} (len {len}, stride {stride})");
        }
        total += bytes.len();
        end = piece.end;
    }
    assert_eq!(total, len, "the pieces do not add up to the buffer (stride {stride})");
    assert_eq!(end, len);
});
