//! Fuzzes the SPDY/3.1 frame decoder: arbitrary bytes, fed in arbitrary pieces, must decode or fail
//! cleanly (never panic), and every decoded frame must survive an encode/decode round trip through
//! a fresh pair of zlib header contexts.
#![no_main]

use bytes::BytesMut;
use spdy::frame::{FrameDecoder, FrameEncoder};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // The first byte picks the feed size, so frames also arrive split at every possible point.
    let Some((&step, data)) = data.split_first() else {
        return;
    };
    let step = usize::from(step).max(1);
    let mut decoder = FrameDecoder::default();
    let mut encoder = FrameEncoder::default();
    let mut redecoder = FrameDecoder::default();
    let mut buf = BytesMut::new();
    for chunk in data.chunks(step) {
        buf.extend_from_slice(chunk);
        loop {
            match decoder.decode_frame(&mut buf) {
                Ok(Some(frame)) => {
                    let mut wire = BytesMut::new();
                    encoder
                        .encode_frame(&frame, &mut wire)
                        .expect("decoded frames re-encode");
                    let again = redecoder
                        .decode_frame(&mut wire)
                        .expect("encoded frames decode");
                    assert_eq!(again.as_ref(), Some(&frame));
                    assert!(wire.is_empty());
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
