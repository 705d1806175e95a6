//! The job protocol between the gateway and kiln-init: any byte stream, cut anywhere, gives
//! frames or an error, never a panic, a hang or an allocation past the frame limit; a job
//! that decodes encodes back to the same frame.
#![no_main]

use kiln_proto::{read_frame, Event, FrameDecoder, FrameKind, Input, Job};
use libfuzzer_sys::fuzz_target;

const MAX: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    // kiln-init's side: one job frame read from a stream.
    let mut input = data;
    if let Ok(Some((FrameKind::Job, payload))) = read_frame(&mut input, MAX) {
        if let Ok(job) = Job::decode(&payload) {
            let again = job.to_frame();
            let mut back = &again[..];
            let (_, p2) = read_frame(&mut back, usize::MAX).unwrap().unwrap();
            assert_eq!(Job::decode(&p2).unwrap(), job);
        }
    }
    // The gateway's side: output frames arriving in pieces of any size.
    let split = data.first().map_or(1, |b| usize::from(*b).max(1));
    let mut decoder = FrameDecoder::new(MAX);
    for piece in data.chunks(split) {
        decoder.push(piece);
        loop {
            match decoder.next_frame() {
                Ok(Some((kind, payload))) => {
                    assert!(payload.len() <= MAX);
                    let _ = Event::decode(kind, &payload);
                    // kiln-init's side of an interactive job: the same stream read as input.
                    if let Ok(input) = Input::decode(kind, &payload) {
                        assert_eq!(input.to_frame()[4], kind as u8);
                    }
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
