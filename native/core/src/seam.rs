//! The seam between the control plane and the shards: a closed list of Commands and Events.
//!
//! Commands go onto a queue per shard and return at once; the shard wakes on an eventfd. Events
//! come back on a queue whose eventfd the control plane (asyncio) watches. Crossings scale with joins,
//! leaves and control decisions, never with packets.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Mutex;

use crate::dtls::Fingerprint;
use crate::ice::{CandidateKind, IceCredentials};
use crate::stats::StatsSnapshot;

pub type RouterId = u64;
pub type TransportId = u64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MediaKind {
    Audio,
    Video,
}

impl MediaKind {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "audio" => Some(MediaKind::Audio),
            "video" => Some(MediaKind::Video),
            _ => None,
        }
    }
}

/// The kinds of media a transport may not send on (Colibri2 `force-mute`): its RTP of a muted kind reaches
/// nobody, while everything it receives, and its own feedback about others' streams, keeps flowing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ForceMute {
    pub audio: bool,
    pub video: bool,
}

impl ForceMute {
    #[inline]
    pub fn mutes(self, kind: MediaKind) -> bool {
        match kind {
            MediaKind::Audio => self.audio,
            MediaKind::Video => self.video,
        }
    }
}

/// One SSRC an endpoint sends (a Producer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SourceSpec {
    pub ssrc: u32,
    pub kind: MediaKind,
    pub clock_rate: u32,
}

#[derive(Clone, Debug)]
pub struct RemoteCandidate {
    pub addr: SocketAddr,
    pub priority: u32,
    pub kind: CandidateKind,
}

/// The closed list of control messages a shard accepts.
#[derive(Clone, Debug)]
pub enum Command {
    CreateRouter {
        router: RouterId,
    },
    CloseRouter {
        router: RouterId,
    },
    CreateTransport {
        router: RouterId,
        transport: TransportId,
        ice: IceCredentials,
        controlling: bool,
    },
    /// The remote's ICE credentials, every DTLS fingerprint it announced and its a=setup value.
    ConnectTransport {
        transport: TransportId,
        remote_ice: IceCredentials,
        fingerprints: Vec<Fingerprint>,
        remote_setup: String,
    },
    AddRemoteCandidates {
        transport: TransportId,
        candidates: Vec<RemoteCandidate>,
    },
    /// The full set of SSRCs this transport sends; replaces the previous set.
    SetSources {
        transport: TransportId,
        sources: Vec<SourceSpec>,
    },
    RequestKeyframe {
        transport: TransportId,
        ssrc: u32,
    },
    /// Force-mute (or unmute) what this transport sends, by kind; replaces the previous setting. Holds
    /// from the moment it is applied, whatever sources or connection state come later.
    SetForceMute {
        transport: TransportId,
        audio: bool,
        video: bool,
    },
    CloseTransport {
        transport: TransportId,
    },
    GetStats {
        request: u64,
    },
    Shutdown,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportState {
    Checking,
    /// ICE, DTLS and SRTP are up: media flows.
    Connected,
    Failed,
    Closed,
}

impl TransportState {
    pub fn as_str(self) -> &'static str {
        match self {
            TransportState::Checking => "checking",
            TransportState::Connected => "connected",
            TransportState::Failed => "failed",
            TransportState::Closed => "closed",
        }
    }
}

#[derive(Clone, Debug)]
pub enum Event {
    TransportState {
        transport: TransportId,
        state: TransportState,
        detail: String,
    },
    Stats {
        request: u64,
        snapshot: Box<StatsSnapshot>,
    },
    /// A command named an object that does not exist (or no longer does).
    CommandFailed {
        transport: TransportId,
        detail: String,
    },
}

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
