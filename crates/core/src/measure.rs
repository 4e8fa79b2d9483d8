//! Figures of the work itself.
//!
//! - [`Counting`], a global allocator that counts live heap bytes, for peak-memory figures in
//!   tests and native tools: `#[global_allocator] static A: Counting = Counting::SYSTEM;` in the
//!   binary (or wrap another allocator with [`Counting::new`]), then [`reset_peak`] and [`peak`]
//!   around the work.
//! - [`wasm_memory_bytes`], the peak Wasm memory of a module compiled to Wasm.
//! - [`Busy`], a future's own execution time, without its waits.

use std::alloc::{GlobalAlloc, Layout, System};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use crate::workflow::Clock;

/// Wraps an allocator (the system's by default) and counts live heap bytes.
pub struct Counting<A = System>(A);

impl Counting<System> {
    pub const SYSTEM: Self = Counting(System);
}

impl<A> Counting<A> {
    pub const fn new(inner: A) -> Self {
        Counting(inner)
    }
}

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let live = LIVE.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

// SAFETY: every call is forwarded to the inner allocator unchanged; only counters are updated.
unsafe impl<A: GlobalAlloc> GlobalAlloc for Counting<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { self.0.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { self.0.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { self.0.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                grew(new_size - layout.size());
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

/// Live heap bytes now.
pub fn live() -> usize {
    LIVE.load(Ordering::Relaxed)
}

/// The most live heap bytes since the last [`reset_peak`].
pub fn peak() -> usize {
    PEAK.load(Ordering::Relaxed)
}

/// Starts a new peak from the live bytes now, and answers them (the baseline).
pub fn reset_peak() -> usize {
    let now = live();
    PEAK.store(now, Ordering::Relaxed);
    now
}

/// Runs `f` and answers its output with the heap's growth at its peak during `f`, past the
/// live bytes before it (with [`Counting`] installed as the global allocator).
pub fn peak_growth<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = reset_peak();
    let out = f();
    (out, peak().saturating_sub(base))
}

/// The size of this module's Wasm linear memory, in bytes: its peak so far, since Wasm memory
/// never shrinks (0 when not compiled to Wasm).
pub fn wasm_memory_bytes() -> u64 {
    #[cfg(target_arch = "wasm32")]
    return core::arch::wasm32::memory_size::<0>() as u64 * 65_536;
    #[cfg(not(target_arch = "wasm32"))]
    0
}

/// Runs a future and adds up the time spent inside its `poll` calls, by `clock`: its own
/// execution, without the time it waits for I/O and timers between them. Resolves to its output
/// and that time in milliseconds.
///
/// The figure is only as good as the clock: a Worker deployed on Cloudflare sees a clock that
/// stands still while code runs (it moves only on I/O), so there it is about zero. Under
/// `wrangler dev` the clock runs, and local R2, D1 and queues (in the same workerd process) do
/// their work while the Worker waits: this splits a run's time into the Worker's and theirs.
pub struct Busy<'c, F, C> {
    inner: Pin<Box<F>>,
    clock: &'c C,
    busy_ms: u64,
}

impl<'c, F: Future, C: Clock> Busy<'c, F, C> {
    pub fn new(inner: F, clock: &'c C) -> Self {
        Self { inner: Box::pin(inner), clock, busy_ms: 0 }
    }
}

impl<F: Future, C: Clock> Future for Busy<'_, F, C> {
    type Output = (F::Output, u64);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let start = self.clock.now_ms();
        let polled = self.inner.as_mut().poll(cx);
        self.busy_ms += self.clock.now_ms().saturating_sub(start);
        polled.map(|output| (output, self.busy_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fusou_testing::FakeClock;
    use std::task::Waker;

    /// Works `busy_ms` of the clock per poll, waiting (pending) between polls, `polls` in all.
    struct Worker<'c> {
        clock: &'c FakeClock,
        polls: u32,
        busy_ms: u64,
    }

    impl Future for Worker<'_> {
        type Output = &'static str;

        fn poll(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<&'static str> {
            self.clock.now.set(self.clock.now.get() + self.busy_ms);
            self.polls -= 1;
            if self.polls == 0 { Poll::Ready("done") } else { Poll::Pending }
        }
    }

    #[test]
    fn counts_the_time_inside_polls_and_not_the_waits_between_them() {
        let clock = FakeClock::default();
        let wait = |ms| clock.now.set(clock.now.get() + ms);
        let mut busy = Busy::new(Worker { clock: &clock, polls: 3, busy_ms: 5 }, &clock);
        let mut cx = Context::from_waker(Waker::noop());
        let mut busy = Pin::new(&mut busy);
        assert!(busy.as_mut().poll(&mut cx).is_pending());
        wait(100); // on I/O
        assert!(busy.as_mut().poll(&mut cx).is_pending());
        wait(40);
        assert_eq!(busy.as_mut().poll(&mut cx), Poll::Ready(("done", 15)));
        assert_eq!(clock.now_ms(), 155);
    }
}
