//! A global allocator that counts heap allocations and reallocations, for the zero-allocation tests.
//! A test binary (its own, since the allocator is process-wide) installs it with
//! `#[global_allocator] static GLOBAL: Counting = Counting;` and measures with [`counted`] (every
//! thread: a shard or load generator thread at work) or [`counted_here`] (the calling thread only,
//! so the test harness's other threads cannot disturb a measurement of plain function calls).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

pub struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    // No destructor (const-initialised Cell), so it is usable while a thread is torn down too.
    static HERE: Cell<u64> = const { Cell::new(0) };
}

/// Runs `f` and returns its result with the allocations made meanwhile on any thread.
pub fn counted<R>(f: impl FnOnce() -> R) -> (R, u64) {
    ALLOCS.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    let out = f();
    COUNTING.store(false, Ordering::SeqCst);
    (out, ALLOCS.load(Ordering::SeqCst))
}

/// Runs `f` and returns its result with the allocations the calling thread made meanwhile.
pub fn counted_here<R>(f: impl FnOnce() -> R) -> (R, u64) {
    let before = allocations_here();
    let out = f();
    (out, allocations_here() - before)
}

/// Every allocation the calling thread has made so far (differences of two readings count).
pub fn allocations_here() -> u64 {
    HERE.with(Cell::get)
}

fn count() {
    if COUNTING.load(Ordering::Relaxed) {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
    }
    let _ = HERE.try_with(|n| n.set(n.get() + 1));
}

// SAFETY: defers to the system allocator; only adds counters.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}
