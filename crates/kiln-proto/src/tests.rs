use proptest::prelude::*;

use super::*;

fn job_strategy() -> impl Strategy<Value = Job> {
    let file = (
        ".{0,20}",
        any::<u32>(),
        proptest::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(path, mode, content)| FileEntry {
            path,
            mode,
            content,
        });
    (
        proptest::collection::vec(".{0,16}", 0..6),
        proptest::collection::vec((".{0,8}", ".{0,8}"), 0..4),
        proptest::collection::vec(any::<u8>(), 0..128),
        proptest::collection::vec(file, 0..4),
        any::<u64>(),
        any::<u64>(),
        proptest::option::of((proptest::collection::vec(".{0,16}", 0..4), any::<u64>())),
        any::<bool>(),
    )
        .prop_map(
            |(argv, env, stdin, files, timeout_ms, output_bytes, compile, interactive)| Job {
                argv,
                env,
                stdin,
                files,
                timeout_ms,
                output_bytes,
                compile: compile.map(|(argv, timeout_ms)| Compile { argv, timeout_ms }),
                interactive,
            },
        )
}

fn exit_strategy() -> impl Strategy<Value = ExitReport> {
    (
        0u8..5,
        any::<Option<i32>>(),
        any::<Option<i32>>(),
        any::<u64>(),
        any::<Option<u64>>(),
        any::<u64>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(s, code, signal, cpu_ms, mem, run_us, o, e)| ExitReport {
            status: Status::from_u8(s).unwrap(),
            code,
            signal,
            cpu_ms,
            memory_peak_bytes: mem,
            run_us,
            stdout_truncated: o,
            stderr_truncated: e,
        })
}

fn decode_one(frame: &[u8], max: usize) -> Result<Option<(FrameKind, Vec<u8>)>, DecodeError> {
    let mut d = FrameDecoder::new(max);
    d.push(frame);
    d.next_frame()
}

proptest! {
    #[test]
    fn job_round_trips(job in job_strategy()) {
        let frame = job.to_frame();
        let (kind, payload) = read_frame(&mut frame.as_slice(), MAX_JOB_FRAME).unwrap().unwrap();
        prop_assert_eq!(kind, FrameKind::Job);
        prop_assert_eq!(Job::decode(&payload).unwrap(), job);
    }

    #[test]
    fn exit_round_trips(x in exit_strategy()) {
        for event in [Event::Exit(x.clone()), Event::CompileExit(x)] {
            let frame = event.to_frame();
            let (kind, payload) = decode_one(&frame, MAX_EVENT_FRAME).unwrap().unwrap();
            prop_assert_eq!(Event::decode(kind, &payload).unwrap(), event);
        }
    }

    #[test]
    fn input_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..64), sig in 1i32..=64) {
        for input in [Input::Stdin(bytes), Input::StdinEof, Input::Signal(sig)] {
            let frame = input.to_frame();
            let (kind, payload) = decode_one(&frame, MAX_EVENT_FRAME).unwrap().unwrap();
            prop_assert_eq!(Input::decode(kind, &payload).unwrap(), input.clone());
            // Input never passes for output, nor the other way round.
            prop_assert!(Event::decode(kind, &payload).is_err());
        }
    }

    #[test]
    fn every_truncation_of_a_job_is_an_error(job in job_strategy(), cut in any::<prop::sample::Index>()) {
        let frame = job.to_frame();
        let cut = cut.index(frame.len());
        // A frame cut short is never a whole frame ...
        prop_assert_eq!(decode_one(&frame[..cut], MAX_JOB_FRAME).unwrap(), None);
        prop_assert!(read_frame(&mut &frame[..cut], MAX_JOB_FRAME).map(|f| f.is_none()).unwrap_or(true));
        // ... and a payload cut short never decodes.
        let payload = &frame[5..];
        prop_assert!(Job::decode(&payload[..cut.min(payload.len().saturating_sub(1))]).is_err());
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Job::decode(&bytes);
        for kind in [FrameKind::Stdout, FrameKind::Stderr, FrameKind::Exit, FrameKind::Job] {
            let _ = Event::decode(kind, &bytes);
        }
        for kind in [FrameKind::StdinData, FrameKind::StdinEof, FrameKind::Signal, FrameKind::Exit] {
            let _ = Input::decode(kind, &bytes);
        }
        let mut d = FrameDecoder::new(1024);
        d.push(&bytes);
        while let Ok(Some(_)) = d.next_frame() {}
        let _ = read_frame(&mut bytes.as_slice(), 1024);
    }

    #[test]
    fn chunked_stream_decodes_like_whole(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 1..8), split in 1usize..17) {
        let mut stream = Vec::new();
        let mut want = Vec::new();
        for c in &chunks {
            stream.extend(Event::Stdout(c.clone()).to_frame());
            want.push(Event::Stdout(c.clone()));
        }
        let mut d = FrameDecoder::new(MAX_EVENT_FRAME);
        let mut got = Vec::new();
        for piece in stream.chunks(split) {
            d.push(piece);
            while let Some((k, p)) = d.next_frame().unwrap() {
                got.push(Event::decode(k, &p).unwrap());
            }
        }
        prop_assert_eq!(got, want);
        prop_assert_eq!(d.pending(), 0);
    }
}

#[test]
fn oversized_frame_is_rejected_before_allocation() {
    let mut frame = (u32::MAX).to_le_bytes().to_vec();
    frame.push(FrameKind::Job as u8);
    assert!(matches!(
        decode_one(&frame, MAX_JOB_FRAME),
        Err(DecodeError::TooLarge { .. })
    ));
    let err = read_frame(&mut frame.as_slice(), MAX_JOB_FRAME).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
}

#[test]
fn empty_frame_and_unknown_kind_are_errors() {
    assert_eq!(
        decode_one(&0u32.to_le_bytes(), 16),
        Err(DecodeError::Truncated)
    );
    let mut frame = 1u32.to_le_bytes().to_vec();
    frame.push(11);
    assert_eq!(decode_one(&frame, 16), Err(DecodeError::UnexpectedKind(11)));
}

#[test]
fn bad_input_frames_are_errors() {
    let exit = Event::Exit(ExitReport::default()).to_frame();
    let (kind, payload) = decode_one(&exit, 64).unwrap().unwrap();
    assert_eq!(
        Input::decode(kind, &payload),
        Err(DecodeError::UnexpectedKind(FrameKind::Exit as u8))
    );
    assert_eq!(
        Input::decode(FrameKind::Signal, &0u32.to_le_bytes()),
        Err(DecodeError::BadValue("signal", 0))
    );
    assert_eq!(
        Input::decode(FrameKind::Signal, &[9, 0]),
        Err(DecodeError::Truncated)
    );
    assert_eq!(
        Input::decode(FrameKind::StdinEof, &[0]),
        Err(DecodeError::TrailingBytes(1))
    );
}

#[test]
fn other_protocol_version_is_refused() {
    let mut frame = Job::default().to_frame();
    frame[5] = frame[5].wrapping_add(1);
    assert!(matches!(
        Job::decode(&frame[5..]),
        Err(DecodeError::Version { .. })
    ));
}

#[test]
fn huge_count_is_rejected_without_allocating() {
    let mut payload = PROTOCOL_VERSION.to_le_bytes().to_vec();
    payload.extend(u32::MAX.to_le_bytes());
    assert_eq!(Job::decode(&payload), Err(DecodeError::Truncated));
}

/// Found by the `frames` fuzz target: a limit of `usize::MAX` overflowed the length check.
#[test]
fn no_limit_at_all_is_a_valid_limit() {
    let frame = Event::Stdout(b"hi".to_vec()).to_frame();
    let (kind, payload) = read_frame(&mut &frame[..], usize::MAX).unwrap().unwrap();
    assert_eq!(
        Event::decode(kind, &payload).unwrap(),
        Event::Stdout(b"hi".to_vec())
    );
    let (kind, payload) = decode_one(&frame, usize::MAX).unwrap().unwrap();
    assert_eq!(
        Event::decode(kind, &payload).unwrap(),
        Event::Stdout(b"hi".to_vec())
    );
}
