//! A global allocator that survives hostile array lengths.
//!
//! The `kafka-protocol` decoders size a `Vec` from the length field on the wire before they
//! read its elements (`Vec::with_capacity(n)`). A garbage frame that claims 2^31 elements of a
//! 100-byte struct asks for 200 GiB; the system allocator refuses and the process aborts,
//! which no `catch_unwind` can stop. [`GuardedAlloc`] serves every allocation of
//! [`HUGE_ALLOCATION_BYTES`] or more with an anonymous `mmap(MAP_NORESERVE)`: the kernel hands
//! out address space without committing memory (in overcommit modes 0 and 1), untouched pages
//! cost nothing, and the decoder fails on the missing bytes long before it touches them.
//! Smaller allocations go to the system allocator unchanged.
//!
//! Binaries and test harnesses that decode untrusted frames install it with
//! `#[global_allocator] static A: protocol::alloc::GuardedAlloc = protocol::alloc::GuardedAlloc;`.
//! Under `vm.overcommit_memory = 2` the guard cannot help; deploy/ says so.

use std::alloc::{GlobalAlloc, Layout, System};

/// Allocations at or above this size are served by `mmap(MAP_NORESERVE)`.
pub const HUGE_ALLOCATION_BYTES: usize = 64 << 20;
const PAGE_BYTES: usize = 4096;

pub struct GuardedAlloc;

fn is_huge(layout: &Layout) -> bool {
    layout.size() >= HUGE_ALLOCATION_BYTES && layout.align() <= PAGE_BYTES
}

unsafe fn map_huge(size: usize) -> *mut u8 {
    // SAFETY: an anonymous private mapping has no preconditions; failure is MAP_FAILED.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        std::ptr::null_mut()
    } else {
        p as *mut u8
    }
}

// SAFETY: every pointer handed out is either from `System` (and returned to it) or from an
// anonymous mapping of at least `layout.size()` bytes, page aligned, and unmapped with the
// same size; which one is decided by the layout alone, so alloc and dealloc always agree.
unsafe impl GlobalAlloc for GuardedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if is_huge(&layout) {
            // SAFETY: size is non-zero (>= HUGE_ALLOCATION_BYTES).
            unsafe { map_huge(layout.size()) }
        } else {
            // SAFETY: forwarded with the caller's layout.
            unsafe { System.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if is_huge(&layout) {
            // Fresh anonymous pages are zero.
            // SAFETY: as in `alloc`.
            unsafe { map_huge(layout.size()) }
        } else {
            // SAFETY: forwarded with the caller's layout.
            unsafe { System.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if is_huge(&layout) {
            // SAFETY: `ptr` came from `map_huge(layout.size())` (same layout decides).
            unsafe {
                libc::munmap(ptr as *mut libc::c_void, layout.size());
            }
        } else {
            // SAFETY: `ptr` came from `System` with this layout.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees `layout.align()` is a valid alignment and
        // `new_size` does not overflow when rounded up to it.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        if !is_huge(&layout) && !is_huge(&new_layout) {
            // SAFETY: both sides belong to `System`.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // SAFETY: allocate, copy the common prefix, free the old block; the two blocks are
        // distinct so the copy does not overlap.
        unsafe {
            let new_ptr = self.alloc(new_layout);
            if !new_ptr.is_null() {
                std::ptr::copy_nonoverlapping(ptr, new_ptr, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            new_ptr
        }
    }
}
