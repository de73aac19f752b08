//! The plumbing under the seam: a queue per direction with an eventfd, so the shard's poll(2) and the
//! control plane's asyncio loop each wake when the other has pushed something.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Mutex;

/// A Linux eventfd used as a wake-up signal.
pub struct EventFd(OwnedFd);

impl EventFd {
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain eventfd(2) call; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor nothing else owns.
        Ok(EventFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    pub fn signal(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64; EAGAIN (counter saturated) is harmless.
        unsafe { libc::write(self.0.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Resets the counter so level-triggered watchers stop firing.
    pub fn clear(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads 8 bytes into a live u64; EAGAIN when already clear is harmless.
        unsafe { libc::read(self.0.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
    }
}

impl AsRawFd for EventFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// A queue with a wake-up eventfd: many producers, one consumer draining in batches.
pub struct Queue<T> {
    items: Mutex<VecDeque<T>>,
    efd: EventFd,
}

impl<T> Queue<T> {
    pub fn new() -> io::Result<Self> {
        Ok(Queue {
            items: Mutex::new(VecDeque::new()),
            efd: EventFd::new()?,
        })
    }

    pub fn push(&self, item: T) {
        self.items
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(item);
        self.efd.signal();
    }

    pub fn push_all(&self, items: impl IntoIterator<Item = T>) {
        let mut q = self.items.lock().unwrap_or_else(|p| p.into_inner());
        let before = q.len();
        q.extend(items);
        let added = q.len() > before;
        drop(q);
        if added {
            self.efd.signal();
        }
    }

    /// Takes everything queued (clearing the wake-up first so nothing pushed meanwhile is missed).
    pub fn drain_into(&self, out: &mut Vec<T>) {
        self.efd.clear();
        let mut q = self.items.lock().unwrap_or_else(|p| p.into_inner());
        out.extend(q.drain(..));
    }

    pub fn fd(&self) -> RawFd {
        self.efd.as_raw_fd()
    }
}
