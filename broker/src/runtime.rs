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

/// Runs the broker until SIGTERM or SIGINT.
pub fn run(config: BrokerConfig) -> Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
    let _lock = lock_data_dir(&config)?;
    // glommio binds with SO_REUSEPORT, which would let a second broker (or a stale one)
    // share the port silently. A plain bind would also trip over TIME_WAIT connections of a
    // previous run, so probe for a live listener instead.
    let probe = if config.listen.ip().is_unspecified() {
        std::net::SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), config.listen.port())
    } else {
        config.listen
    };
    // A broker killed a moment ago can still hold its listener: the kernel tears io_uring
    // rings (and the sockets they reference) down after the process is gone. So a live
    // listener must persist for STALE_LISTENER_GRACE before it counts as another broker.
    if config.listen.port() != 0 {
        let deadline = std::time::Instant::now() + STALE_LISTENER_GRACE;
        while std::net::TcpStream::connect_timeout(&probe, Duration::from_millis(200)).is_ok() {
            if std::time::Instant::now() >= deadline {
                bail!(
                    "address {} is already served by another process",
                    config.listen
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
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

/// On shard 0: load metadata, open every shard's logs, then start every listener. Shard 0
/// binds first so that a configured port 0 resolves once and every shard shares that port.
async fn bootstrap(shard: &std::rc::Rc<Shard>) -> Result<std::net::SocketAddr> {
    let controller = shard
        .controller
        .clone()
        .expect("shard 0 runs the controller");
    controller.bootstrap(shard).await?;
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
