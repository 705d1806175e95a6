//! Runs the kiln-init binary as an ordinary subprocess (not PID 1, so it kills the program's
//! process group instead of the whole pid namespace) and speaks the protocol with it.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use kiln_proto::{read_frame, Event, ExitReport, FileEntry, Job, Status, MAX_EVENT_FRAME};

fn temp_dir(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("kiln-init-it-{}-{name}-{n}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

#[derive(Debug)]
struct Run {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    exit: Option<ExitReport>,
    /// The compile step's output and exit, when the job had one.
    compile_out: Vec<u8>,
    compile_exit: Option<ExitReport>,
    /// Frames after the exit frame; there must be none.
    after_exit: usize,
    init_code: Option<i32>,
    init_stderr: String,
    elapsed: Duration,
}

impl Run {
    fn exit(&self) -> &ExitReport {
        self.exit.as_ref().expect("an exit frame")
    }
    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// Feeds `input` to kiln-init in `dir`, keeping its stdin open as the host does, and collects
/// every frame it sends.
fn run_raw(dir: &Path, input: &[u8], close_stdin: bool) -> Run {
    run_raw_with(dir, &[], input, close_stdin)
}

/// kiln-init in `dir` with every stream piped. KILN_INIT_BIN runs the same checks against
/// another build, e.g. the static release one.
fn spawn_init(dir: &Path, args: &[&str]) -> std::process::Child {
    let bin =
        std::env::var_os("KILN_INIT_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_kiln-init").into());
    Command::new(bin)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn run_raw_with(dir: &Path, args: &[&str], input: &[u8], close_stdin: bool) -> Run {
    let start = Instant::now();
    let mut child = spawn_init(dir, args);
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input).unwrap();
    let stdin = if close_stdin {
        drop(stdin);
        None
    } else {
        Some(stdin)
    };
    let mut out = child.stdout.take().unwrap();
    let mut run = Run {
        stdout: Vec::new(),
        stderr: Vec::new(),
        exit: None,
        after_exit: 0,
        init_code: None,
        init_stderr: String::new(),
        elapsed: Duration::ZERO,
        compile_out: Vec::new(),
        compile_exit: None,
    };
    while let Some((kind, payload)) = read_frame(&mut out, MAX_EVENT_FRAME).unwrap() {
        if run.exit.is_some() {
            run.after_exit += 1;
        }
        match Event::decode(kind, &payload).unwrap() {
            Event::Stdout(b) => run.stdout.extend(b),
            Event::Stderr(b) => run.stderr.extend(b),
            Event::Exit(x) => run.exit = Some(x),
            Event::CompileStdout(b) | Event::CompileStderr(b) => run.compile_out.extend(b),
            Event::CompileExit(x) => {
                assert!(run.exit.is_none(), "the compile comes first");
                run.compile_exit = Some(x)
            }
        }
    }
    let status = child.wait().unwrap();
    run.elapsed = start.elapsed();
    drop(stdin);
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut run.init_stderr)
        .unwrap();
    run.init_code = status.code();
    run
}

fn run_in(dir: &Path, job: &Job) -> Run {
    let run = run_raw(dir, &job.to_frame(), false);
    assert_eq!(run.init_code, Some(0), "{run:?}");
    assert_eq!(run.after_exit, 0, "{run:?}");
    run
}

fn run(job: &Job) -> Run {
    let dir = temp_dir("job");
    let r = run_in(&dir, job);
    let _ = fs::remove_dir_all(&dir);
    r
}

fn job(argv: &[&str]) -> Job {
    Job {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        timeout_ms: 10_000,
        output_bytes: 1 << 20,
        ..Job::default()
    }
}

fn sh(script: &str) -> Job {
    job(&["sh", "-c", script])
}

#[test]
fn echo_hello() {
    let r = run(&job(&["echo", "hello"]));
    assert_eq!(r.stdout(), "hello\n");
    assert_eq!(r.stderr(), "");
    let x = r.exit();
    assert_eq!((x.status, x.code, x.signal), (Status::Ok, Some(0), None));
    assert!(!x.stdout_truncated && !x.stderr_truncated);
    assert!(x.run_us > 0 && x.run_us < 5_000_000, "{x:?}");
    assert!(x.memory_peak_bytes.is_some(), "{x:?}");
}

#[test]
fn stdin_is_passed() {
    let mut j = job(&["cat"]);
    j.stdin = b"some input\nno newline".to_vec();
    assert_eq!(run(&j).stdout(), "some input\nno newline");
}

#[test]
fn large_stdin_and_stdout_flow_together() {
    // Far more than a pipe holds in each direction: init must write and read at once.
    let mut j = job(&["cat"]);
    j.stdin = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    j.output_bytes = 10 << 20;
    let r = run(&j);
    assert_eq!(r.stdout, j.stdin);
    assert_eq!(r.exit().code, Some(0));
}

#[test]
fn program_closing_stdin_early_is_fine() {
    let mut j = sh("exec 0<&-; echo closed");
    j.stdin = vec![b'x'; 1 << 20];
    let r = run(&j);
    assert_eq!(r.stdout(), "closed\n");
    assert_eq!(r.exit().code, Some(0));
}

#[test]
fn stdout_and_stderr_are_separate() {
    let r = run(&sh("echo out; echo err >&2"));
    assert_eq!(r.stdout(), "out\n");
    assert_eq!(r.stderr(), "err\n");
}

#[test]
fn env_is_overlaid() {
    let mut j = sh("echo \"$FOO $BAR\"; test -n \"$PATH\" && echo has-path");
    j.env = vec![
        ("FOO".into(), "first".into()),
        ("BAR".into(), "bar".into()),
        ("FOO".into(), "last".into()),
    ];
    assert_eq!(run(&j).stdout(), "last bar\nhas-path\n");
}

#[test]
fn files_are_written_before_the_run() {
    let dir = temp_dir("files");
    let mut j = sh("cat data/in.txt; ./bin/tool.sh");
    j.files = vec![
        FileEntry {
            path: "data/in.txt".into(),
            mode: 0o640,
            content: b"file content\n".to_vec(),
        },
        FileEntry {
            path: "./bin//tool.sh".into(),
            mode: 0o755,
            content: b"#!/bin/sh\necho tool ran\n".to_vec(),
        },
    ];
    let r = run_in(&dir, &j);
    assert_eq!(r.stdout(), "file content\ntool ran\n", "{r:?}");
    assert_eq!(r.exit().code, Some(0));
    let mode = |p: &str| fs::metadata(dir.join(p)).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode("data/in.txt"), 0o640);
    assert_eq!(mode("bin/tool.sh"), 0o755);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn non_zero_exit_code() {
    let r = run(&sh("echo before; exit 3"));
    let x = r.exit();
    assert_eq!((x.status, x.code, x.signal), (Status::Ok, Some(3), None));
    assert_eq!(r.stdout(), "before\n");
}

#[test]
fn death_by_signal() {
    let x = run(&sh("kill -TERM $$")).exit().clone();
    assert_eq!(
        (x.status, x.code, x.signal),
        (Status::Signal, None, Some(15))
    );
}

#[test]
fn timeout_kills_the_run() {
    let mut j = job(&["sleep", "10"]);
    j.timeout_ms = 300;
    let r = run(&j);
    let x = r.exit();
    assert_eq!(
        (x.status, x.code, x.signal),
        (Status::Timeout, None, Some(9))
    );
    assert!(x.run_us >= 300_000, "{x:?}");
    assert!(r.elapsed < Duration::from_millis(1500), "{:?}", r.elapsed);
}

#[test]
fn output_flood_is_cut_at_the_limit() {
    let mut j = job(&["yes"]);
    j.output_bytes = 1000;
    let r = run(&j);
    assert_eq!(r.stdout.len(), 1000);
    assert!(r.stdout.chunks(2).all(|c| c == b"y\n"));
    let x = r.exit();
    assert_eq!(x.status, Status::OutputLimit);
    assert_eq!(x.signal, Some(9));
    assert!(x.stdout_truncated && !x.stderr_truncated, "{x:?}");
}

#[test]
fn output_limit_counts_both_streams() {
    let mut j = sh("printf 12345; printf abcdefgh >&2; sleep 10");
    j.output_bytes = 8;
    let r = run(&j);
    assert_eq!(r.stdout(), "12345");
    assert_eq!(r.stderr(), "abc");
    let x = r.exit();
    assert_eq!(x.status, Status::OutputLimit);
    assert!(!x.stdout_truncated && x.stderr_truncated, "{x:?}");
    assert!(r.elapsed < Duration::from_secs(5));
}

#[test]
fn missing_program_is_127() {
    let r = run(&job(&["kiln-no-such-program"]));
    let x = r.exit();
    assert_eq!((x.status, x.code, x.signal), (Status::Ok, Some(127), None));
    assert!(
        r.stderr()
            .starts_with("kiln-init: cannot run 'kiln-no-such-program': "),
        "{}",
        r.stderr()
    );
    assert!(r.stderr().ends_with('\n'));
    assert_eq!(r.stdout(), "");

    let r = run(&job(&[]));
    assert_eq!(r.exit().code, Some(127));
    assert!(r.stderr().starts_with("kiln-init: "));
}

#[test]
fn not_executable_is_126() {
    let mut j = job(&["./script.sh"]);
    j.files = vec![FileEntry {
        path: "script.sh".into(),
        mode: 0o644,
        content: b"#!/bin/sh\necho no\n".to_vec(),
    }];
    let r = run(&j);
    assert_eq!(r.exit().code, Some(126), "{r:?}");
    assert_eq!(r.stdout(), "");
}

#[test]
fn bad_file_path_prevents_the_run() {
    let dir = temp_dir("dotdot");
    let mut j = job(&["touch", "ran"]);
    j.files = vec![FileEntry {
        path: "sub/../../escape".into(),
        mode: 0o644,
        content: b"x".to_vec(),
    }];
    let r = run_in(&dir, &j);
    let x = r.exit();
    assert_eq!((x.status, x.code, x.signal), (Status::Ok, Some(126), None));
    assert_eq!(
        r.stderr(),
        "kiln-init: cannot write file sub/../../escape: path contains '..'\n"
    );
    assert!(!dir.join("ran").exists());
    assert!(!dir.parent().unwrap().join("escape").exists());
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_input_exits_2_without_frames() {
    let dir = temp_dir("bad");
    let mut wrong_version = job(&["true"]).to_frame();
    wrong_version[5] ^= 0x7f;
    let inputs: [(&[u8], bool); 5] = [
        (b"", true),
        (&[5, 0, 0, 0, 9, 1, 2, 3, 4], false),
        (&[3, 0, 0, 0, 1, 0], true),
        (&kiln_proto::Event::Stdout(b"hi".to_vec()).to_frame(), false),
        (&wrong_version, false),
    ];
    for (input, close) in inputs {
        let r = run_raw(&dir, input, close);
        assert_eq!(r.init_code, Some(2), "{input:?}: {r:?}");
        assert!(r.exit.is_none() && r.stdout.is_empty());
        assert!(r.init_stderr.starts_with("kiln-init: "), "{r:?}");
        assert_eq!(r.init_stderr.lines().count(), 1, "{r:?}");
    }
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn background_child_does_not_keep_the_run_alive() {
    let r = run(&sh("sleep 30 & echo done"));
    assert_eq!(r.stdout(), "done\n");
    let x = r.exit();
    assert_eq!((x.status, x.code), (Status::Ok, Some(0)));
    assert!(r.elapsed < Duration::from_secs(5), "{:?}", r.elapsed);
}

#[test]
fn output_written_just_before_exit_is_kept() {
    let r = run(&sh("head -c 200000 /dev/zero; echo; echo tail >&2"));
    assert_eq!(r.stdout.len(), 200_001);
    assert_eq!(r.stderr(), "tail\n");
}

#[test]
fn ksm_and_thp_marks_reach_the_program() {
    let dir = temp_dir("marks");
    let status = |args: &[&str]| {
        let job =
            sh("grep -h -e THP_enabled -e ksm_merge_any /proc/self/status /proc/self/ksm_stat");
        let r = run_raw_with(&dir, args, &job.to_frame(), false);
        assert_eq!(r.init_code, Some(0), "{r:?}");
        r.stdout().split_whitespace().collect::<Vec<_>>().join(" ")
    };
    assert_eq!(status(&[]), "THP_enabled: 1 ksm_merge_any: no");
    assert_eq!(
        status(&["--ksm", "--no-thp"]),
        "THP_enabled: 0 ksm_merge_any: yes"
    );
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn compile_step_runs_first_and_a_failed_one_ends_the_job() {
    let dir = temp_dir("compile");
    let mut j = sh("cat built; echo ran");
    j.compile = Some(kiln_proto::Compile {
        argv: vec![
            "sh".into(),
            "-c".into(),
            "echo compiling; echo warn >&2; echo artefact > built".into(),
        ],
        timeout_ms: 5000,
    });
    let r = run_raw_with(&dir, &[], &j.to_frame(), false);
    assert_eq!(r.init_code, Some(0), "{r:?}");
    assert_eq!(String::from_utf8_lossy(&r.compile_out), "compiling\nwarn\n");
    assert!(r.compile_exit.as_ref().unwrap().succeeded(), "{r:?}");
    assert_eq!(
        r.stdout(),
        "artefact\nran\n",
        "the run sees what the compile made"
    );
    assert_eq!(r.exit().code, Some(0));

    // A failing compile: its exit frame is the last frame, and nothing runs.
    let mut j = sh("echo must-not-run");
    j.compile = Some(kiln_proto::Compile {
        argv: vec![
            "sh".into(),
            "-c".into(),
            "echo 'error: nope' >&2; exit 1".into(),
        ],
        timeout_ms: 5000,
    });
    let r = run_raw_with(&dir, &[], &j.to_frame(), false);
    assert_eq!(r.init_code, Some(0), "{r:?}");
    assert_eq!(r.compile_exit.as_ref().unwrap().code, Some(1));
    assert!(r.exit.is_none() && r.stdout.is_empty(), "{r:?}");

    // A compile that hangs ends at its own time limit.
    let mut j = sh("echo must-not-run");
    j.compile = Some(kiln_proto::Compile {
        argv: vec!["sleep".into(), "30".into()],
        timeout_ms: 300,
    });
    let r = run_raw_with(&dir, &[], &j.to_frame(), false);
    assert_eq!(
        r.compile_exit.as_ref().unwrap().status,
        Status::Timeout,
        "{r:?}"
    );
    assert!(r.exit.is_none(), "{r:?}");
    assert!(r.elapsed < Duration::from_secs(5));
    let _ = fs::remove_dir_all(&dir);
}

/// An interactive job: kiln-init and a host that answers what the program prints.
struct Session {
    child: std::process::Child,
    /// The host's end of the channel; `None` once closed.
    stdin: Option<std::process::ChildStdin>,
    stdout: std::process::ChildStdout,
    out: Vec<u8>,
}

impl Session {
    fn start(dir: &Path, job: &Job) -> Session {
        let mut child = spawn_init(dir, &[]);
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(&job.to_frame()).unwrap();
        let stdout = child.stdout.take().unwrap();
        Session {
            child,
            stdin: Some(stdin),
            stdout,
            out: Vec::new(),
        }
    }

    fn send(&mut self, input: kiln_proto::Input) {
        let channel = self.stdin.as_mut().expect("open");
        channel.write_all(&input.to_frame()).unwrap();
    }

    /// Frames until stdout holds `text`; the exit frame before that is a failure.
    fn wait_for(&mut self, text: &str) {
        while !String::from_utf8_lossy(&self.out).contains(text) {
            match self.next() {
                Event::Stdout(b) => self.out.extend(b),
                other => panic!("waiting for {text:?}, got {other:?}"),
            }
        }
    }

    fn next(&mut self) -> Event {
        let (kind, payload) = read_frame(&mut self.stdout, MAX_EVENT_FRAME)
            .unwrap()
            .expect("a frame");
        Event::decode(kind, &payload).unwrap()
    }

    /// Frames to the exit frame: all of stdout, and the exit.
    fn finish(mut self) -> (String, ExitReport) {
        loop {
            match self.next() {
                Event::Stdout(b) => self.out.extend(b),
                Event::Exit(x) => {
                    assert!(self.child.wait().unwrap().success());
                    return (String::from_utf8_lossy(&self.out).into_owned(), x);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
}

#[test]
fn interactive_stdin_arrives_while_the_program_runs() {
    use kiln_proto::Input;
    let dir = temp_dir("interactive");
    let mut j = sh("echo ready; read a; echo got $a; read b; echo got $b; read c || echo eof");
    j.stdin = b"first\n".to_vec();
    j.interactive = true;
    let mut s = Session::start(&dir, &j);
    // The job's own stdin comes first; the program then waits for more, which the host sends
    // only after it has seen the program's answer.
    s.wait_for("got first\n");
    s.send(Input::Stdin(b"sec".to_vec()));
    s.send(Input::Stdin(b"ond\n".to_vec()));
    s.wait_for("got second\n");
    s.send(Input::StdinEof);
    let (out, exit) = s.finish();
    assert_eq!(out, "ready\ngot first\ngot second\neof\n");
    assert_eq!((exit.status, exit.code), (Status::Ok, Some(0)));

    // A signal after the end of stdin still arrives.
    let mut j = sh("trap 'echo interrupted; exit 3' INT; read a || echo eof; sleep 20 & wait");
    j.interactive = true;
    let mut s = Session::start(&dir, &j);
    s.send(Input::StdinEof);
    s.wait_for("eof\n");
    s.send(Input::Stdin(b"dropped\n".to_vec()));
    s.send(Input::Signal(2));
    let (out, exit) = s.finish();
    assert_eq!(out, "eof\ninterrupted\n");
    assert_eq!(exit.code, Some(3));

    // The host's channel closing is the end of stdin too.
    let mut j = sh("echo ready; cat; echo done");
    j.interactive = true;
    let mut s = Session::start(&dir, &j);
    s.wait_for("ready\n");
    s.send(Input::Stdin(b"echoed\n".to_vec()));
    s.wait_for("echoed\n");
    s.stdin = None;
    let (out, exit) = s.finish();
    assert_eq!(out, "ready\nechoed\ndone\n");
    assert_eq!(exit.code, Some(0));
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn a_signal_from_the_host_reaches_the_run() {
    let dir = temp_dir("signal");
    let mut j = sh("trap 'echo interrupted; exit 3' INT; echo ready; sleep 20 & wait");
    j.interactive = true;
    let mut s = Session::start(&dir, &j);
    s.wait_for("ready\n");
    let t0 = Instant::now();
    s.send(kiln_proto::Input::Signal(2)); // SIGINT
    let (out, exit) = s.finish();
    assert_eq!(out, "ready\ninterrupted\n");
    assert_eq!((exit.status, exit.code), (Status::Ok, Some(3)));
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "the signal ended it"
    );

    // A job that is not interactive reads nothing more from the host: stdin is closed at once.
    let mut s = Session::start(&dir, &sh("cat; echo eof"));
    s.send(kiln_proto::Input::Stdin(b"ignored\n".to_vec()));
    let (out, _) = s.finish();
    assert_eq!(out, "eof\n");
    let _ = fs::remove_dir_all(&dir);
}
