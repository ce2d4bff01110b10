//! Frame decoding in both directions: never panics, never allocates past the
//! limit, and every frame it returns is exactly what its header declares.
#![no_main]

use bytes::BytesMut;
use hoop_proto_pg::{Direction, FrameDecoder};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for direction in [Direction::Frontend, Direction::Backend] {
        let decoder = FrameDecoder::new(direction, 1 << 16);
        let mut buf = BytesMut::from(data);
        if data.first() == Some(&0) {
            while let Ok(Some(frame)) = decoder.decode_startup(&mut buf) {
                assert!(frame.raw.len() >= 4);
            }
        }
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => {
                    assert!(frame.raw.len() >= 5 && frame.raw.len() <= (1 << 16) + 1);
                    let _ = frame.body();
                }
                Ok(None) | Err(_) => break,
            }
        }
        assert!(buf.capacity() <= data.len().max(1 << 17) + (1 << 17));
    }
});
