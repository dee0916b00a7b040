//! Process start-up and shutdown: one glommio executor per shard, the signal thread, and the
//! two-phase stop (drain requests on every shard, then flush and close every log).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use glommio::{LocalExecutorBuilder, Placement};

use crate::config::BrokerConfig;
use crate::server::start_listener;
use crate::shard::{Shard, ShardId, ShardJob};

/// How long shutdown waits for in-flight requests (`sluice.shutdown.drain.ms`, fixed for now).
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(10);

/// How long start-up waits for a listener on its port to go away before refusing to start.
const STALE_LISTENER_GRACE: Duration = Duration::from_secs(3);

enum Event {
    /// Every shard listens, on this address (its port resolved when 0 was asked for).
    Ready(std::net::SocketAddr),
    Failed(String),
    Signal(i32),
}

/// Exit code of a process ended by a panic in any thread.
const PANIC_EXIT_CODE: i32 = 70;

/// A panic anywhere ends the whole process. A shard that panics takes its partitions, its
/// listener and its part of every cross-shard request with it, while the rest would keep
/// answering health checks and never finish a shutdown; a supervisor (systemd's
/// `Restart=on-failure`) restarts a process that exits, and recovery does the rest.
fn install_panic_hook() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("unnamed");
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(not a string)");
        let location = info.location().map(|l| l.to_string()).unwrap_or_default();
        tracing::error!(thread = name, panic = message, %location, "panic: the broker exits");
        default_hook(info);
        // SAFETY: _exit ends the process at once; nothing after it runs.
        unsafe { libc::_exit(PANIC_EXIT_CODE) };
    }));
}

/// Raises the soft descriptor limit to the hard one. Every connection, segment file and
/// index costs a descriptor, and the soft limit a shell or container hands out (often 1024)
/// runs out long before the hard one. Kafka leaves raising it to the operator; the hard
/// limit is the operator's word on how many the broker may have, so it takes them all.
fn raise_open_files_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the rlimit we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        let e = std::io::Error::last_os_error();
        tracing::warn!(error = %e, "cannot read the open files limit");
        return;
    }
    let before = lim.rlim_cur;
    // An unlimited hard limit cannot be the soft one: the kernel caps descriptors at
    // fs.nr_open.
    let target = if lim.rlim_max == libc::RLIM_INFINITY {
        std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(lim.rlim_cur)
    } else {
        lim.rlim_max
    };
    if lim.rlim_cur < target {
        let raised = libc::rlimit {
            rlim_cur: target,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads the rlimit we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim = raised;
        } else {
            // The broker runs with what it has; the accept loops back off if it runs out.
            let e = std::io::Error::last_os_error();
            tracing::warn!(soft = before, hard = lim.rlim_max, error = %e, "cannot raise the open files limit");
        }
    }
    tracing::info!(
        soft = lim.rlim_cur,
        hard = lim.rlim_max,
        was = before,
        "open files limit"
    );
}

/// Refuses to start when another process already listens on `addr`. glommio binds with
/// SO_REUSEPORT, which would let a second broker (or a stale one) share the port silently:
/// the kernel would then split connections (clients', or a voter's Raft traffic) between
/// the two. A plain bind would also trip over TIME_WAIT connections of a previous run, so
/// this probes for a live listener instead.
fn refuse_if_served(addr: std::net::SocketAddr, what: &str) -> Result<()> {
    if addr.port() == 0 {
        return Ok(());
    }
    let probe = if addr.ip().is_unspecified() {
        std::net::SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), addr.port())
    } else {
        addr
    };
    // A broker killed a moment ago can still hold its listener: the kernel tears io_uring
    // rings (and the sockets they reference) down after the process is gone. So a live
    // listener must persist for STALE_LISTENER_GRACE before it counts as another process.
    let deadline = std::time::Instant::now() + STALE_LISTENER_GRACE;
    while std::net::TcpStream::connect_timeout(&probe, Duration::from_millis(200)).is_ok() {
        if std::time::Instant::now() >= deadline {
            bail!("{what} address {addr} is already served by another process");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// Runs the broker until SIGTERM or SIGINT.
pub fn run(config: BrokerConfig) -> Result<()> {
    install_panic_hook();
    raise_open_files_limit();
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
    let _lock = lock_data_dir(&config)?;
    if config.roles.broker {
        refuse_if_served(config.listen, "the client listener")?;
    }
    if let Some(addr) = config.controller_listen_addr()? {
        refuse_if_served(addr, "the controller listener")?;
    }

    let signals = block_signals()?;
    let config = Arc::new(config);
    let (events_tx, events_rx) = flume::bounded::<Event>(config.smp + 4);
    let mut senders = Vec::new();
    let mut inboxes = Vec::new();
    for _ in 0..config.smp {
        let (tx, rx) = flume::bounded::<ShardJob>(config.shard_inbox_capacity);
        senders.push(tx);
        inboxes.push(rx);
    }
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mut handles = Vec::new();
    for (i, inbox) in inboxes.into_iter().enumerate() {
        let config = config.clone();
        let peers = senders.clone();
        let events = events_tx.clone();
        let handle = LocalExecutorBuilder::new(Placement::Fixed(i % cpus))
            .name(&format!("shard-{i}"))
            .io_memory(config.io_memory_bytes)
            .spawn(move || async move {
                let shard = Shard::new(ShardId(i), config, peers);
                glommio::spawn_local(shard.clone().serve_inbox(inbox)).detach();
                glommio::spawn_local(shard.commit.clone().run()).detach();
                glommio::spawn_local(shard.clone().expire_producers_loop()).detach();
                glommio::spawn_local(shard.clone().groups_loop()).detach();
                glommio::spawn_local(shard.clone().retention_loop()).detach();
                glommio::spawn_local(shard.clone().isr_loop()).detach();
                let exit = shard.exit.listen();
                if i == 0 {
                    let ready = match bootstrap(&shard).await {
                        Ok(addr) => Event::Ready(addr),
                        Err(e) => Event::Failed(format!("{e:#}")),
                    };
                    let _ = events.send_async(ready).await;
                }
                exit.await;
            })
            .map_err(std::io::Error::from)
            .with_context(|| format!("starting shard {i}"))?;
        handles.push(handle);
    }
    spawn_signal_thread(signals, events_tx);

    let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let admin_addr = start_admin(&config, &senders, &ready);
    let mut failed = None;
    match events_rx.recv() {
        Ok(Event::Ready(listen)) => {
            ready.store(true, std::sync::atomic::Ordering::Release);
            let admin = admin_addr
                .map(|a| a.to_string())
                .unwrap_or_else(|| "off".into());
            tracing::info!(%listen, shards = config.smp, data_dir = %config.data_dir.display(), %admin, "sluice ready");
            if let Some(target) = config.debug_panic_shard {
                // Fault injection for tests: a shard that panics must end the process.
                if let Some(inbox) = senders.get(target) {
                    let _ = inbox.send(Box::new(move |_shard: std::rc::Rc<Shard>| {
                        Box::pin(async move {
                            panic!("sluice.debug.panic.shard={target}: injected panic");
                        })
                    }));
                }
            }
            match events_rx.recv() {
                Ok(Event::Signal(sig)) => tracing::info!(signal = sig, "shutting down"),
                Ok(Event::Failed(e)) => failed = Some(e),
                _ => {}
            }
        }
        Ok(Event::Failed(e)) => failed = Some(e),
        Ok(Event::Signal(sig)) => tracing::info!(signal = sig, "shutting down during start-up"),
        Err(_) => failed = Some("all shards exited".into()),
    }
    shutdown(&senders);
    for h in handles {
        let _ = h.join();
    }
    if let Some(e) = failed {
        bail!("start-up failed: {e}");
    }
    tracing::info!("sluice stopped");
    Ok(())
}

/// Binds and starts the admin HTTP server unless disabled; a taken port is logged, not fatal.
fn start_admin(
    config: &Arc<BrokerConfig>,
    senders: &[flume::Sender<ShardJob>],
    ready: &Arc<std::sync::atomic::AtomicBool>,
) -> Option<std::net::SocketAddr> {
    if config.admin_listen.is_empty() {
        return None;
    }
    let listener = match std::net::TcpListener::bind(&config.admin_listen) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(addr = %config.admin_listen, error = %e, "admin HTTP server not started");
            return None;
        }
    };
    let addr = listener.local_addr().ok();
    crate::admin::spawn(
        listener,
        crate::admin::Admin {
            senders: senders.to_vec(),
            config: config.clone(),
            ready: ready.clone(),
        },
    );
    addr
}

/// On shard 0: load metadata, open every shard's logs, then start every client listener
/// (none on a controller-only node). Shard 0 binds first so that a configured port 0 resolves once and every shard shares that port.
async fn bootstrap(shard: &std::rc::Rc<Shard>) -> Result<std::net::SocketAddr> {
    let controller = shard
        .controller
        .clone()
        .expect("shard 0 runs the controller");
    controller.bootstrap(shard).await?;
    if !shard.config.roles.broker {
        // A controller-only node serves no clients: its one listener is the controller's.
        return Ok(shard
            .config
            .controller_listen_addr()?
            .unwrap_or(shard.config.listen));
    }
    let mut addr = shard.config.listen;
    for target in 0..shard.shard_count() {
        addr = shard
            .invoke_on(ShardId(target), move |s| async move {
                start_listener(s, addr).map_err(|e| format!("{e:#}"))
            })
            .await?
            .map_err(anyhow::Error::msg)?;
    }
    Ok(addr)
}

fn shutdown(senders: &[flume::Sender<ShardJob>]) {
    let phase = |make: &dyn Fn() -> ShardJob| {
        let waits: Vec<_> = senders
            .iter()
            .filter_map(|s| {
                let (tx, rx) = flume::bounded::<()>(1);
                let job = make();
                let wrapped: ShardJob = Box::new(move |shard| {
                    Box::pin(async move {
                        job(shard).await;
                        let _ = tx.send(());
                    })
                });
                s.send(wrapped).ok().map(|_| rx)
            })
            .collect();
        for rx in waits {
            let _ = rx.recv();
        }
    };
    // Controlled shutdown first (a cluster only): the active controller fences this broker
    // and moves its leaderships, so that clients go elsewhere at once and a restart
    // registers without waiting for the old session to expire.
    if let Some(first) = senders.first() {
        let (tx, rx) = flume::bounded::<()>(1);
        let job: ShardJob = Box::new(move |shard| {
            Box::pin(async move {
                if let Some(c) = shard.controller.clone() {
                    c.controlled_shutdown().await;
                }
                let _ = tx.send(());
            })
        });
        if first.send(job).is_ok() {
            let _ = rx.recv();
        }
    }
    phase(&|| {
        Box::new(|s: std::rc::Rc<Shard>| Box::pin(async move { s.drain(SHUTDOWN_DRAIN).await }))
    });
    phase(&|| Box::new(|s: std::rc::Rc<Shard>| Box::pin(async move { s.close_logs().await })));
    for s in senders {
        let _ = s.send(Box::new(|s: std::rc::Rc<Shard>| {
            Box::pin(async move {
                s.exit.notify(usize::MAX);
            })
        }));
    }
}

fn block_signals() -> Result<libc::sigset_t> {
    // SAFETY: sigset operations on a local, zero-initialised set; pthread_sigmask changes only
    // this thread's mask, inherited by the shard threads spawned after it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            bail!("cannot block SIGTERM/SIGINT");
        }
        Ok(set)
    }
}

fn spawn_signal_thread(set: libc::sigset_t, events: flume::Sender<Event>) {
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || loop {
            let mut sig: libc::c_int = 0;
            // SAFETY: `set` holds signals blocked in every thread; sigwait writes one into `sig`.
            let rc = unsafe { libc::sigwait(&set, &mut sig) };
            if rc == 0 {
                let _ = events.send(Event::Signal(sig));
                return;
            }
        })
        .expect("spawning the signal thread");
}

/// An exclusive flock on `<data dir>/.lock` for the life of the process.
fn lock_data_dir(config: &BrokerConfig) -> Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    let path = config.data_dir.join(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: flock on a file descriptor we own.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        bail!(
            "data dir {} is in use by another broker",
            config.data_dir.display()
        );
    }
    Ok(file)
}
