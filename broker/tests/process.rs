//! The broker as a process: a panic in any shard ends it with exit code 70, `/v1/health` and
//! `/v1/ready` name a stuck shard, the admin HTTP server keeps answering while clients drip
//! their requests (and closes them at the whole-request deadline), refuses connections over
//! its limit, and start-up raises the soft open files limit to the hard one.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A broker process started on port 0 with its stderr in a file.
struct Proc {
    child: Child,
    log_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Proc {
    /// Starts a broker with `props`; `nofile` sets its (soft, hard) open files limit.
    fn spawn(smp: usize, props: &[&str], nofile: Option<(u64, u64)>) -> Proc {
        let dir = tempfile::tempdir().unwrap();
        let log_path = dir.path().join("broker.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
        cmd.args([
            "start",
            "--listen",
            "127.0.0.1:0",
            "--smp",
            &smp.to_string(),
        ])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--prop", "sluice.admin.listen=127.0.0.1:0"]);
        for p in props {
            cmd.args(["--prop", p]);
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log);
        if let Some((soft, hard)) = nofile {
            common::limit_open_files(&mut cmd, soft, hard);
        }
        let child = cmd.spawn().unwrap();
        Proc {
            child,
            log_path,
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        common::strip_ansi(&std::fs::read_to_string(&self.log_path).unwrap_or_default())
    }

    /// The admin address from the "sluice ready" line, once it is logged.
    fn wait_ready(&mut self) -> SocketAddr {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let log = self.log();
            if let Some(line) = log.lines().find(|l| l.contains("sluice ready")) {
                let rest = &line[line.find("admin=").expect("admin address") + 6..];
                return rest.split_whitespace().next().unwrap().parse().unwrap();
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("broker exited at start-up with {status}: {log}");
            }
            assert!(Instant::now() < deadline, "broker did not start: {log}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The kernel's ids of the threads whose names start with `prefix`.
    fn thread_ids(&self, prefix: &str) -> Vec<i32> {
        let tasks = format!("/proc/{}/task", self.child.id());
        let ids: Vec<i32> = std::fs::read_dir(&tasks)
            .unwrap()
            .filter_map(|entry| {
                let path = entry.ok()?.path();
                let comm = std::fs::read_to_string(path.join("comm")).ok()?;
                comm.starts_with(prefix)
                    .then(|| path.file_name()?.to_str()?.parse().ok())?
            })
            .collect();
        assert!(!ids.is_empty(), "no thread {prefix}* in {tasks}");
        ids
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET `path` on a new connection: (status, body), or `None` when no status line arrived
/// within `timeout`.
fn get(addr: SocketAddr, path: &str, timeout: Duration) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(timeout)).unwrap();
    // One write, and its failure ignored: a server that refuses the connection may have
    // closed it before the request arrives, and its reply is still there to read.
    let _ = s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    // The server closes after its reply; a reset after the reply still leaves the reply.
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.get(9..12)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}

fn wait_exit(p: &mut Proc, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = p.child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "the process kept running: {}",
            p.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_panic_in_a_shard_ends_the_process_with_exit_code_70_and_is_logged() {
    for shard in [1, 0] {
        let prop = format!("sluice.debug.panic.shard={shard}");
        let mut p = Proc::spawn(2, &[&prop], None);
        // Without the hook the shard thread dies and the process keeps running.
        let status = wait_exit(&mut p, Duration::from_secs(10));
        let log = p.log();
        assert_eq!(status.code(), Some(70), "shard {shard}: {status}: {log}");
        let line = log
            .lines()
            .find(|l| l.contains("panic: the broker exits"))
            .unwrap_or_else(|| panic!("no panic line: {log}"));
        assert!(line.contains("ERROR"), "{line}");
        // glommio names an executor's thread "<name>-<executor id>".
        assert!(line.contains(&format!("thread=\"shard-{shard}-")), "{line}");
        assert!(line.contains("injected panic"), "{line}");
        assert!(line.contains("location=broker/src/runtime.rs:"), "{line}");
    }
}

/// Stops threads of a child process with ptrace, and lets them go again on drop.
struct StoppedThreads(Vec<i32>);

impl StoppedThreads {
    fn stop(tids: Vec<i32>) -> StoppedThreads {
        let null = std::ptr::null_mut::<libc::c_void>();
        let mut stopped = StoppedThreads(Vec::new());
        for tid in tids {
            // SAFETY: ptrace requests on a thread of our own child process; no memory is
            // passed.
            unsafe {
                let rc = libc::ptrace(libc::PTRACE_SEIZE, tid, null, null);
                assert_eq!(
                    rc,
                    0,
                    "this test stops a shard's threads with ptrace: {}",
                    std::io::Error::last_os_error()
                );
                stopped.0.push(tid);
                assert_eq!(libc::ptrace(libc::PTRACE_INTERRUPT, tid, null, null), 0);
                let mut status = 0;
                assert_eq!(libc::waitpid(tid, &mut status, libc::__WALL), tid);
                assert!(libc::WIFSTOPPED(status), "status {status:#x}");
            }
        }
        stopped
    }
}

impl Drop for StoppedThreads {
    fn drop(&mut self) {
        let null = std::ptr::null_mut::<libc::c_void>();
        for &tid in &self.0 {
            // SAFETY: detaching from a thread we attached to resumes it.
            unsafe { libc::ptrace(libc::PTRACE_DETACH, tid, null, null) };
        }
    }
}

#[test]
fn health_and_ready_name_a_stuck_shard() {
    let mut p = Proc::spawn(2, &[], None);
    let admin = p.wait_ready();
    let long = Duration::from_secs(10);
    assert_eq!(get(admin, "/v1/health", long).unwrap().0, 200);
    assert_eq!(get(admin, "/v1/ready", long).unwrap().0, 200);

    // A shard whose executor does not run (as one in an endless loop) answers no job.
    // glommio names an executor's threads "<name>-<executor id>".
    let stuck = StoppedThreads::stop(p.thread_ids("shard-1-"));
    let started = Instant::now();
    let (status, body) = get(admin, "/v1/health", long).expect("health answers");
    let took = started.elapsed();
    assert_eq!(status, 503, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["unanswered_shards"], serde_json::json!([1]), "{body}");
    assert!(took < Duration::from_secs(4), "health took {took:?}");
    let (status, body) = get(admin, "/v1/ready", long).expect("ready answers");
    assert_eq!(status, 503, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["unanswered_shards"], serde_json::json!([1]), "{body}");

    // Once it runs again, so does everything else.
    drop(stuck);
    assert_eq!(get(admin, "/v1/health", long).unwrap().0, 200);
    assert_eq!(get(admin, "/v1/ready", long).unwrap().0, 200);
    assert!(p.child.try_wait().unwrap().is_none(), "{}", p.log());
}

/// A client that sends an unfinished request head one byte per second. Returns how long
/// after connecting the server closed the connection, and what it sent back.
fn drip(addr: SocketAddr, give_up: Duration) -> (Duration, Vec<u8>) {
    let start = Instant::now();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let head = b"GET /v1/health HTTP/1.1\r\nHost: a-very-slow-client.example\r\nX-Pad: ";
    let mut reply = Vec::new();
    let mut buf = [0u8; 1024];
    for i in 0.. {
        assert!(start.elapsed() < give_up, "the server never closed a drip");
        // Writing after the server closed may fail; the read below then sees the close.
        let _ = s.write_all(&[head.get(i).copied().unwrap_or(b'x')]);
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => reply.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    (start.elapsed(), reply)
}

#[test]
fn admin_answers_while_clients_drip_and_closes_them_at_the_deadline() {
    let mut p = Proc::spawn(2, &["sluice.admin.request.timeout.ms=3000"], None);
    let admin = p.wait_ready();
    let drippers: Vec<_> = (0..4)
        .map(|_| std::thread::spawn(move || drip(admin, Duration::from_secs(15))))
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    // Served one at a time, health would wait behind the drips for good. Each answer may
    // take up to a second on a loaded machine, most must come within 100 ms.
    let mut took: Vec<Duration> = (0..5)
        .map(|_| {
            let started = Instant::now();
            let answer = get(admin, "/v1/health", Duration::from_secs(1));
            assert_eq!(answer.map(|a| a.0), Some(200), "health while clients drip");
            std::thread::sleep(Duration::from_millis(100));
            started.elapsed() - Duration::from_millis(100)
        })
        .collect();
    took.sort();
    assert!(took[2] < Duration::from_millis(100), "health took {took:?}");
    for d in drippers {
        let (closed_after, reply) = d.join().unwrap();
        // The deadline counts from the accept: a byte a second does not extend it.
        assert!(
            closed_after >= Duration::from_millis(2900) && closed_after < Duration::from_secs(5),
            "closed after {closed_after:?}"
        );
        let reply = String::from_utf8_lossy(&reply);
        assert!(reply.starts_with("HTTP/1.1 408 "), "{reply:?}");
    }
}

#[test]
fn admin_connections_over_the_limit_are_answered_503() {
    let mut p = Proc::spawn(1, &["sluice.admin.max.connections=2"], None);
    let admin = p.wait_ready();
    let held: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut s = TcpStream::connect(admin).unwrap();
            s.write_all(b"GET /v1/health HTTP/1.1\r\n").unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let (status, body) = get(admin, "/v1/health", Duration::from_secs(2)).expect("an answer");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("too many admin connections"), "{body}");
    assert!(started.elapsed() < Duration::from_millis(500));
    // Closed connections give their places back.
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let answer = get(admin, "/v1/health", Duration::from_secs(2)).map(|a| a.0);
        if answer == Some(200) {
            break;
        }
        assert!(Instant::now() < deadline, "still {answer:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn open_files_limit(pid: u32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let mut v = line["Max open files".len()..].split_whitespace();
    let mut next = || v.next().unwrap().parse().unwrap();
    (next(), next())
}

#[test]
fn start_up_raises_the_soft_open_files_limit_to_the_hard_one() {
    let (_, hard) = open_files_limit(std::process::id());
    assert!(
        hard > 256,
        "this test needs a hard limit above 256, not {hard}"
    );
    let mut p = Proc::spawn(1, &[], Some((256, hard)));
    p.wait_ready();
    assert_eq!(open_files_limit(p.child.id()), (hard, hard));
    let log = p.log();
    let line = log
        .lines()
        .find(|l| l.contains("open files limit"))
        .unwrap_or_else(|| panic!("no limit line: {log}"));
    assert!(line.contains("INFO"), "{line}");
    assert!(
        line.contains(&format!("soft={hard} hard={hard} was=256")),
        "{line}"
    );
}

#[test]
fn a_log_that_cannot_be_written_does_not_stop_the_broker() {
    // stderr on a full disk (here /dev/full: every write is ENOSPC). Writing a log line
    // fails; reporting that failure must not panic the broker.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = free.local_addr().unwrap();
    drop(free);
    let dir = tempfile::tempdir().unwrap();
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["start", "--listen", &addr.to_string(), "--smp", "1"])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--prop", "sluice.admin.listen=127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(full)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(addr).is_err() {
        assert!(child.try_wait().unwrap().is_none(), "the broker exited");
        assert!(Instant::now() < deadline, "the broker did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut c = common::Client::connect(addr);
    // Each of these logs lines (topic logs opened, a refused produce's warning).
    for i in 0..3 {
        assert_eq!(c.create_topic(&format!("t{i}"), 1), 0);
    }
    let b = common::batch(
        &[b"v".to_vec()],
        0,
        kafka_protocol::records::Compression::None,
    );
    assert_eq!(c.produce("nope", &[(0, b)], -1)[0].1, 3);
    assert!(child.try_wait().unwrap().is_none(), "the broker exited");
    let _ = child.kill();
    let _ = child.wait();
}
