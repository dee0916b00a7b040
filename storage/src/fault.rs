//! The disk-fault seam: a [`FaultPlan`] a test hands to [`crate::Log::open_with`] decides,
//! at each segment write, fdatasync and fallocate, whether the operation proceeds, is
//! delayed, fails with an errno, or (writes only) is torn.
//!
//! Production logs carry no plan (`None`): the check at each point is one branch on an
//! `Option`, nothing else. Segment data I/O goes through the seam — the operations whose
//! failure decides what is acknowledged — and so does the ftruncate of `Log::truncate_to`
//! (a failure in the middle of a truncation). Index, snapshot and checkpoint files are
//! derived data that recovery rebuilds or reconciles; their writes are not injected.
//!
//! A torn write models a crash in the middle of a write: the first `keep_bytes` of the
//! buffer (rounded down to the 512-byte direct-I/O block) reach the file, the rest does not,
//! and the write then fails so that nothing after it is acknowledged. The test then drops
//! the `Log` without closing it — the process "died" — and reopens the directory.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// An I/O operation at the seam.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IoOp {
    /// A direct-I/O write of `len` bytes (a multiple of 512) at `position`.
    Write {
        path: PathBuf,
        position: u64,
        len: usize,
    },
    /// An fdatasync of a segment file.
    Sync { path: PathBuf },
    /// An fallocate(KEEP_SIZE) of a segment file up to `len` bytes.
    Allocate { path: PathBuf, len: u64 },
    /// `Log::truncate_to` cutting a segment file to `len` bytes.
    Truncate { path: PathBuf, len: u64 },
}

impl IoOp {
    pub fn path(&self) -> &Path {
        match self {
            IoOp::Write { path, .. }
            | IoOp::Sync { path }
            | IoOp::Allocate { path, .. }
            | IoOp::Truncate { path, .. } => path,
        }
    }
}

/// What happens to one operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    /// The operation runs normally.
    #[default]
    Proceed,
    /// A slow disk: the operation runs after this delay.
    Delay(Duration),
    /// The operation fails with this errno (for example `libc::ENOSPC` = 28, `EIO` = 5)
    /// without touching the file.
    Fail(i32),
    /// Writes only: the first `keep_bytes` (rounded down to a block) reach the file, then
    /// the write fails with EIO. Treated as `Fail(EIO)` for other operations.
    Torn { keep_bytes: usize },
}

/// Errno values the tests use (Linux).
pub const EIO: i32 = 5;
pub const ENOSPC: i32 = 28;

/// Decides the fate of each segment I/O operation of one log.
pub trait FaultPlan {
    fn decide(&self, op: &IoOp) -> Fault;
}

/// A plan scripted by a test: per kind of operation a queue of one-shot faults, consumed in
/// order by the next operations of that kind, then a sticky fault for every later one.
/// Counts the operations it saw.
#[derive(Default)]
pub struct ScriptedFaults {
    writes: Kind,
    syncs: Kind,
    allocates: Kind,
    truncates: Kind,
    /// Every operation seen, in order.
    log: RefCell<Vec<IoOp>>,
}

#[derive(Default)]
struct Kind {
    queue: RefCell<VecDeque<Fault>>,
    sticky: Cell<Fault>,
    count: Cell<u64>,
}

impl Kind {
    fn next(&self) -> Fault {
        self.count.set(self.count.get() + 1);
        self.queue
            .borrow_mut()
            .pop_front()
            .unwrap_or(self.sticky.get())
    }
}

impl ScriptedFaults {
    /// The next write (after any already queued) gets `fault`.
    pub fn queue_write(&self, fault: Fault) {
        self.writes.queue.borrow_mut().push_back(fault);
    }
    pub fn queue_sync(&self, fault: Fault) {
        self.syncs.queue.borrow_mut().push_back(fault);
    }
    pub fn queue_allocate(&self, fault: Fault) {
        self.allocates.queue.borrow_mut().push_back(fault);
    }
    pub fn queue_truncate(&self, fault: Fault) {
        self.truncates.queue.borrow_mut().push_back(fault);
    }
    /// Every write without a queued fault gets `fault` (`Fault::Proceed` to clear).
    pub fn set_writes(&self, fault: Fault) {
        self.writes.sticky.set(fault);
    }
    pub fn set_syncs(&self, fault: Fault) {
        self.syncs.sticky.set(fault);
    }
    pub fn set_allocates(&self, fault: Fault) {
        self.allocates.sticky.set(fault);
    }
    pub fn writes(&self) -> u64 {
        self.writes.count.get()
    }
    pub fn syncs(&self) -> u64 {
        self.syncs.count.get()
    }
    pub fn allocates(&self) -> u64 {
        self.allocates.count.get()
    }
    /// The operations seen so far, oldest first.
    pub fn operations(&self) -> Vec<IoOp> {
        self.log.borrow().clone()
    }
}

impl FaultPlan for ScriptedFaults {
    fn decide(&self, op: &IoOp) -> Fault {
        self.log.borrow_mut().push(op.clone());
        match op {
            IoOp::Write { .. } => self.writes.next(),
            IoOp::Sync { .. } => self.syncs.next(),
            IoOp::Allocate { .. } => self.allocates.next(),
            IoOp::Truncate { .. } => self.truncates.next(),
        }
    }
}

/// Applies the plan's decision for `op`: sleeps for a delay, returns the injected error, or
/// `Ok(Some(keep_bytes))` for a torn write. `Ok(None)`: run the operation normally.
pub(crate) async fn apply(
    plan: Option<&std::rc::Rc<dyn FaultPlan>>,
    op: IoOp,
) -> std::io::Result<Option<usize>> {
    let Some(plan) = plan else {
        return Ok(None);
    };
    match plan.decide(&op) {
        Fault::Proceed => Ok(None),
        Fault::Delay(d) => {
            glommio::timer::sleep(d).await;
            Ok(None)
        }
        Fault::Fail(errno) => Err(std::io::Error::from_raw_os_error(errno)),
        Fault::Torn { keep_bytes } => match op {
            IoOp::Write { .. } => Ok(Some(keep_bytes)),
            _ => Err(std::io::Error::from_raw_os_error(EIO)),
        },
    }
}
