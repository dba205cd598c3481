//! The TSO/USO splitter fed hostile virtio headers and frames: it never panics, a refusal leaves
//! the frame unchanged and appends nothing, and every segment it yields lies inside the frame
//! (after the virtio header), with its header inside the header arena, at most
//! `split::MAX_SEGMENTS_PER_FRAME` of them, each no larger than an IP packet.
#![no_main]

use libfuzzer_sys::fuzz_target;
use udptun::{split, virtio};

fuzz_target!(|data: &[u8]| {
    let mut frame = data.to_vec();
    // Something already in the arena, as after an earlier frame of the batch.
    let mut headers = vec![0xee; 7];
    let mut segments = Vec::new();
    match split::split(&mut frame, &mut headers, &mut segments) {
        Err(_) => {
            assert_eq!(frame, data, "a refused frame was changed");
            assert_eq!(headers.len(), 7);
            assert!(segments.is_empty());
        }
        Ok(()) => {
            assert!((1..=split::MAX_SEGMENTS_PER_FRAME).contains(&segments.len()));
            let mut end = virtio::VIRTIO_HEADER_LEN;
            for segment in &segments {
                assert!(segment.payload.start >= virtio::VIRTIO_HEADER_LEN);
                assert!(segment.payload.start <= segment.payload.end && segment.payload.end <= frame.len());
                assert_eq!(segment.payload.start, end.max(segment.payload.start), "payloads overlap");
                end = segment.payload.end;
                // A whole packet has no header of its own; a split one's lies after what was there.
                assert!(
                    segment.is_whole() || (segment.header.start >= 7 && segment.header.end <= headers.len())
                );
                assert!(segment.header.len() + segment.payload.len() <= 65_535);
            }
            if segments.len() > 1 {
                assert_eq!(end, frame.len(), "the last segment ends the frame");
            }
        }
    }
});
