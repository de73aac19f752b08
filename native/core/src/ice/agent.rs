//! The ICE agent state machine: checklist, transactions, nomination, consent.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::{
    random_bytes, Candidate, CandidateKind, IceConfig, IceCredentials, IceDrop, IceEvent, IceState,
    Transmit,
};
use crate::stun::{StunClass, StunMessage, StunWriter, BINDING};

/// ERROR-CODE for a role conflict (RFC 8445 section 7.3.1.1).
const ROLE_CONFLICT: u16 = 487;

/// Candidate pair states (RFC 8445 section 6.1.2.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PairState {
    Frozen,
    Waiting,
    InProgress,
    Succeeded,
    Failed,
}

/// One entry of the checklist. Indices into the candidate lists stay valid: candidates and pairs
/// are only ever appended.
#[derive(Debug)]
struct CandidatePair {
    local: usize,
    remote: usize,
    priority: u64,
    state: PairState,
    /// Nominated (RFC 8445 section 8.1.1); with `Succeeded`, the pair may be selected.
    nominated: bool,
    /// Controlled side: USE-CANDIDATE arrived before our own check on the pair succeeded
    /// (RFC 8445 section 7.3.1.5).
    nominate_on_success: bool,
    /// Last authenticated success response on this pair.
    last_response: Option<Instant>,
}

/// Pair priority, RFC 8445 section 6.1.2.3, with G the controlling and D the controlled side's
/// candidate priority: `2^32 * MIN(G,D) + 2 * MAX(G,D) + (G > D ? 1 : 0)`.
fn pair_priority(controlling: bool, local: u32, remote: u32) -> u64 {
    let (g, d) = if controlling {
        (local, remote)
    } else {
        (remote, local)
    };
    let (g, d) = (u64::from(g), u64::from(d));
    (g.min(d) << 32) + 2 * g.max(d) + u64::from(g > d)
}

/// What a client transaction is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TxKind {
    /// A connectivity check (with USE-CANDIDATE when nominating).
    Check { use_candidate: bool },
    /// A consent freshness check (RFC 7675) on the selected pair.
    Consent,
}

/// An outstanding Binding request (RFC 8489 section 6.2.1 retransmission).
#[derive(Debug)]
struct Transaction {
    id: [u8; 12],
    /// The pair checked; for a consent request on the path an ICE restart kept, unused (`old`).
    pair: usize,
    kind: TxKind,
    /// A consent request on the kept path, with its generation's credentials.
    old: bool,
    source: SocketAddr,
    destination: SocketAddr,
    /// Role we claimed in the request (for 487 handling, RFC 8445 section 7.2.5.1).
    sent_controlling: bool,
    /// The request, resent byte for byte.
    bytes: Vec<u8>,
    sends: u32,
    rto: Duration,
    /// Next retransmission, or the final timeout after the last send.
    deadline: Instant,
}

/// The path an ICE restart keeps carrying media until the new generation selects a pair (make
/// before break, RFC 8445 section 9): its generation's credentials keep its consent alive and
/// still answer the peer's checks on it.
#[derive(Debug)]
struct OldPath {
    local: IceCredentials,
    remote: IceCredentials,
    /// USERNAME of our requests on it.
    username: Vec<u8>,
    source: SocketAddr,
    destination: SocketAddr,
}

/// A sans-IO ICE agent for one component. See the [module docs](super) for how to drive it.
pub struct IceAgent {
    config: IceConfig,
    controlling: bool,
    tie_breaker: u64,
    local: IceCredentials,
    remote: Option<IceCredentials>,
    /// USERNAME we send: "<remote ufrag>:<local ufrag>" (RFC 8445 section 7.2.2).
    outgoing_username: Vec<u8>,
    local_candidates: Vec<Candidate>,
    remote_candidates: Vec<Candidate>,
    pairs: Vec<CandidatePair>,
    /// Triggered-check queue (RFC 8445 section 6.1.4.1): pair index, with USE-CANDIDATE.
    triggered: VecDeque<(usize, bool)>,
    transactions: Vec<Transaction>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<IceEvent>,
    state: IceState,
    selected: Option<usize>,
    /// Latest `now` seen; lets `poll_timeout` ask for an immediate wake-up.
    last_now: Option<Instant>,
    /// Earliest time the next paced check may go out.
    next_check_at: Option<Instant>,
    /// When the first pair became valid (starts the nomination delay).
    first_valid_at: Option<Instant>,
    /// Pair whose USE-CANDIDATE check is outstanding (controlling).
    nominating: Option<usize>,
    /// Last authenticated consent (or check) response on the selected pair.
    consent_ok: Option<Instant>,
    consent_next: Option<Instant>,
    /// Since when there has been nothing left to check (starts the failure grace period).
    idle_since: Option<Instant>,
    prflx_count: u32,
    drops: [u64; IceDrop::COUNT],
    /// Set by an ICE restart while the previous generation's selected pair still carries media.
    old: Option<Box<OldPath>>,
    /// ICE restarts so far (the Colibri2 `ice-generation`).
    generation: u32,
}

impl IceAgent {
    /// A new agent with default timers. `tie_breaker` resolves role conflicts (RFC 8445 section 7.3.1.1).
    pub fn new(controlling: bool, local: IceCredentials, tie_breaker: u64) -> Self {
        Self::with_config(controlling, local, tie_breaker, IceConfig::default())
    }

    /// A new agent with explicit timers and limits.
    pub fn with_config(
        controlling: bool,
        local: IceCredentials,
        tie_breaker: u64,
        config: IceConfig,
    ) -> Self {
        IceAgent {
            config,
            controlling,
            tie_breaker,
            local,
            remote: None,
            outgoing_username: Vec::new(),
            local_candidates: Vec::new(),
            remote_candidates: Vec::new(),
            pairs: Vec::new(),
            triggered: VecDeque::new(),
            transactions: Vec::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            state: IceState::New,
            selected: None,
            last_now: None,
            next_check_at: None,
            first_valid_at: None,
            nominating: None,
            consent_ok: None,
            consent_next: None,
            idle_since: None,
            prflx_count: 0,
            drops: [0; IceDrop::COUNT],
            old: None,
            generation: 0,
        }
    }

    /// Our credentials.
    pub fn local_credentials(&self) -> &IceCredentials {
        &self.local
    }

    /// The peer's credentials, once known.
    pub fn remote_credentials(&self) -> Option<&IceCredentials> {
        self.remote.as_ref()
    }

    /// Whether we are currently the controlling agent (may change on a role conflict).
    pub fn controlling(&self) -> bool {
        self.controlling
    }

    /// The timers and limits in use.
    pub fn config(&self) -> &IceConfig {
        &self.config
    }

    /// Adds a local candidate (duplicates by address are ignored) and pairs it with remote ones.
    pub fn add_local_candidate(&mut self, c: Candidate) {
        if self
            .local_candidates
            .iter()
            .any(|l| l.addr == c.addr && l.tcp == c.tcp)
        {
            return;
        }
        self.local_candidates.push(c);
        let local = self.local_candidates.len() - 1;
        for remote in 0..self.remote_candidates.len() {
            self.form_pair(local, remote);
        }
    }

    /// Our candidates.
    pub fn local_candidates(&self) -> &[Candidate] {
        &self.local_candidates
    }

    /// The peer's candidates, signalled or peer-reflexive.
    pub fn remote_candidates(&self) -> &[Candidate] {
        &self.remote_candidates
    }

    /// ICE restart (RFC 8445 section 9) with our new `local` credentials: the checklist and the
    /// peer's candidates are flushed, and the peer's new credentials and candidates are awaited.
    /// Make before break: the pair selected so far keeps carrying media, its consent checked and
    /// the peer's checks on it answered with the old credentials, until a pair of the new
    /// generation is selected; if its consent expires first, the agent fails as it would have.
    /// Ignored once `Failed` or `Closed`.
    pub fn restart(&mut self, local: IceCredentials) {
        if matches!(self.state, IceState::Closed | IceState::Failed) {
            return;
        }
        let kept = match (self.selected_pair(), self.selected, self.remote.take()) {
            (Some((source, destination)), Some(sel), Some(remote)) => {
                // Consent requests in flight on the pair are the old generation's now.
                self.transactions
                    .retain(|t| t.kind == TxKind::Consent && t.pair == sel);
                for t in &mut self.transactions {
                    t.old = true;
                }
                Some(Box::new(OldPath {
                    local: self.local.clone(),
                    remote,
                    username: std::mem::take(&mut self.outgoing_username),
                    source,
                    destination,
                }))
            }
            // Restarted again before the last restart selected anything: the path kept then is
            // still the one carrying media.
            _ => {
                self.transactions.retain(|t| t.old);
                self.old.take()
            }
        };
        self.old = kept;
        self.local = local;
        self.outgoing_username.clear();
        self.remote_candidates.clear();
        self.pairs.clear();
        self.triggered.clear();
        self.selected = None;
        self.nominating = None;
        self.first_valid_at = None;
        self.next_check_at = None;
        self.idle_since = None;
        self.generation += 1;
        if self.old.is_none() && self.state != IceState::New {
            // Nothing was connected: the new generation starts over.
            self.set_state(IceState::Checking);
        }
    }

    /// ICE restarts so far.
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// The ufrags requests may name: ours, and the previous generation's while its path is kept.
    pub fn accepted_ufrags(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.local.ufrag.as_str())
            .chain(self.old.as_ref().map(|o| o.local.ufrag.as_str()))
    }

    /// Sets the peer's credentials: once, and once more after each [`IceAgent::restart`].
    pub fn set_remote_credentials(&mut self, creds: IceCredentials) {
        self.outgoing_username.clear();
        self.outgoing_username
            .extend_from_slice(creds.ufrag.as_bytes());
        self.outgoing_username.push(b':');
        self.outgoing_username
            .extend_from_slice(self.local.ufrag.as_bytes());
        self.remote = Some(creds);
    }

    /// Adds a remote candidate; trickle is fine, also after `Connected`. A signalled candidate
    /// replaces a peer-reflexive one with the same address (RFC 8445 section 7.3.1.3).
    pub fn add_remote_candidate(&mut self, c: Candidate) {
        if let Some(i) = self
            .remote_candidates
            .iter()
            .position(|r| r.addr == c.addr && r.tcp == c.tcp)
        {
            let known = &mut self.remote_candidates[i];
            if known.kind == CandidateKind::PeerReflexive && c.kind != CandidateKind::PeerReflexive
            {
                *known = c;
                self.recompute_priorities();
            }
            return;
        }
        if self.remote_candidates.len() >= self.config.max_remote_candidates {
            self.count(IceDrop::Limit);
            return;
        }
        self.remote_candidates.push(c);
        let remote = self.remote_candidates.len() - 1;
        for local in 0..self.local_candidates.len() {
            self.form_pair(local, remote);
        }
    }

    /// Parses a datagram and passes it to [`IceAgent::handle_stun`]; counts `Malformed` if it is not STUN.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        local: SocketAddr,
        from: SocketAddr,
        buf: &[u8],
    ) -> Result<(), IceDrop> {
        match StunMessage::parse(buf) {
            Ok(msg) => self.handle_stun(now, local, from, &msg),
            Err(_) => {
                self.count(IceDrop::Malformed);
                Err(IceDrop::Malformed)
            }
        }
    }

    /// A STUN message that arrived on `local` from `from` (already routed to this agent).
    ///
    /// Returns why it was ignored, if it was; the same reason is counted in [`IceAgent::drop_count`].
    pub fn handle_stun(
        &mut self,
        now: Instant,
        local: SocketAddr,
        from: SocketAddr,
        msg: &StunMessage<'_>,
    ) -> Result<(), IceDrop> {
        let result = self.on_stun(now, local, from, msg);
        if let Err(reason) = result {
            self.count(reason);
        }
        self.drive(now);
        result
    }

    /// Runs timers: retransmissions, paced checks, nomination, consent, failure.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.drive(now);
    }

    /// Next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// When to call [`IceAgent::handle_timeout`] next (may be in the past: call it at once).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if matches!(self.state, IceState::Closed | IceState::Failed) {
            return None;
        }
        let mut next: Option<Instant> = None;
        let mut at = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        for tx in &self.transactions {
            at(Some(tx.deadline));
        }
        if self.remote.is_some() {
            if self.state == IceState::New && !self.pairs.is_empty() {
                at(self.last_now);
            }
            if self.has_check_work() {
                at(self.next_check_at.or(self.last_now));
            }
        }
        if self.controlling
            && self.selected.is_none()
            && self.nominating.is_none()
            && self.best_valid().is_some()
        {
            at(self
                .first_valid_at
                .map(|t| t + self.config.nomination_delay));
        }
        if (self.selected.is_some() || self.old.is_some())
            && matches!(self.state, IceState::Connected | IceState::Disconnected)
        {
            at(self.consent_next);
            at(self.consent_ok.map(|t| t + self.config.consent_timeout));
            if self.state == IceState::Connected {
                at(self.consent_ok.map(|t| t + self.config.disconnected_after));
            }
        }
        at(self.idle_since.map(|t| t + self.failure_grace()));
        next
    }

    /// Next event for the owner.
    pub fn poll_event(&mut self) -> Option<IceEvent> {
        self.events.pop_front()
    }

    /// Current state.
    pub fn state(&self) -> IceState {
        self.state
    }

    /// The selected (nominated) pair as (local, remote); `None` before `Connected` and once final.
    pub fn selected_pair(&self) -> Option<(SocketAddr, SocketAddr)> {
        if matches!(self.state, IceState::Failed | IceState::Closed) {
            return None;
        }
        let Some(selected) = self.selected else {
            return self.old.as_ref().map(|o| (o.source, o.destination));
        };
        let pair = self.pairs.get(selected)?;
        Some((
            self.local_candidates.get(pair.local)?.addr,
            self.remote_candidates.get(pair.remote)?.addr,
        ))
    }

    /// Stops everything; the agent answers nothing afterwards.
    pub fn close(&mut self) {
        self.transactions.clear();
        self.triggered.clear();
        self.transmits.clear();
        self.set_state(IceState::Closed);
    }

    /// Whether a response with this transaction id belongs to us (lets the shard route responses).
    ///
    /// Media (non-STUN) from the selected remote is NOT proof of life for consent (RFC 7675
    /// requires STUN responses); only responses matched here refresh consent.
    pub fn is_pending_transaction(&self, tid: &[u8; 12]) -> bool {
        self.transactions.iter().any(|t| &t.id == tid)
    }

    /// How many messages were dropped for `reason`.
    pub fn drop_count(&self, reason: IceDrop) -> u64 {
        self.drops.get(reason.index()).copied().unwrap_or(0)
    }

    fn count(&mut self, reason: IceDrop) {
        if let Some(c) = self.drops.get_mut(reason.index()) {
            *c += 1;
        }
    }

    // ---- input ---------------------------------------------------------------------------------

    fn on_stun(
        &mut self,
        now: Instant,
        local: SocketAddr,
        from: SocketAddr,
        msg: &StunMessage<'_>,
    ) -> Result<(), IceDrop> {
        if matches!(self.state, IceState::Closed | IceState::Failed) {
            return Err(IceDrop::Inactive);
        }
        self.last_now = Some(now);
        if msg.method() != BINDING {
            return Err(IceDrop::NotBinding);
        }
        match msg.class() {
            StunClass::Request => self.on_request(now, local, from, msg),
            // Binding indications are keepalives (RFC 8445 section 11): nothing to do.
            StunClass::Indication => Ok(()),
            StunClass::SuccessResponse | StunClass::ErrorResponse => {
                self.on_response(now, local, from, msg)
            }
        }
    }

    /// An incoming check, RFC 8445 section 7.3.
    fn on_request(
        &mut self,
        now: Instant,
        local: SocketAddr,
        from: SocketAddr,
        msg: &StunMessage<'_>,
    ) -> Result<(), IceDrop> {
        if msg.unknown_required_attribute().is_some() {
            return Err(IceDrop::UnknownAttribute);
        }
        // USERNAME is "<our ufrag>:<their ufrag>" from our side (RFC 8445 section 7.3).
        let username = msg.username().ok_or(IceDrop::MissingUsername)?;
        let colon = username
            .iter()
            .position(|&b| b == b':')
            .ok_or(IceDrop::BadUsername)?;
        let (ours, theirs) = (&username[..colon], &username[colon + 1..]);
        if ours != self.local.ufrag.as_bytes() {
            return match &self.old {
                Some(old) if ours == old.local.ufrag.as_bytes() => {
                    self.on_old_request(local, from, theirs, msg)
                }
                _ => Err(IceDrop::BadUsername),
            };
        }
        if self
            .remote
            .as_ref()
            .is_some_and(|r| r.ufrag.as_bytes() != theirs)
        {
            return Err(IceDrop::BadUsername);
        }
        if !msg.has_integrity() {
            return Err(IceDrop::MissingIntegrity);
        }
        if !msg.verify_integrity(self.local.pwd.as_bytes()) {
            return Err(IceDrop::BadIntegrity);
        }
        let priority = msg.priority().ok_or(IceDrop::MissingPriority)?;
        let local_idx = self.find_local(local).ok_or(IceDrop::UnknownLocal)?;
        let tid = msg.transaction_id();

        // 7.3.1.1: detecting and repairing role conflicts.
        if self.controlling {
            if let Some(theirs) = msg.ice_controlling() {
                if self.tie_breaker >= theirs {
                    self.send_response(local_idx, from, tid, Some(ROLE_CONFLICT), false);
                    return Ok(());
                }
                self.switch_role(false);
            }
        } else if let Some(theirs) = msg.ice_controlled() {
            if self.tie_breaker >= theirs {
                self.switch_role(true);
            } else {
                self.send_response(local_idx, from, tid, Some(ROLE_CONFLICT), false);
                return Ok(());
            }
        }

        // 7.3.1.2: success response with XOR-MAPPED-ADDRESS = source of the request.
        self.send_response(local_idx, from, tid, None, false);

        // 7.3.1.3: learn a peer-reflexive candidate from an unknown source.
        // Over ICE-TCP the source is the peer's end of the connection this request came on.
        let tcp = self.local_candidates[local_idx].tcp;
        let remote_idx = match self
            .remote_candidates
            .iter()
            .position(|r| r.addr == from && r.tcp == tcp)
        {
            Some(i) => i,
            None => {
                if self.remote_candidates.len() >= self.config.max_remote_candidates {
                    return Err(IceDrop::Limit);
                }
                self.prflx_count += 1;
                let foundation = format!("prflx{}", self.prflx_count);
                self.remote_candidates.push(Candidate {
                    tcp,
                    ..Candidate::new(from, CandidateKind::PeerReflexive, priority, foundation)
                });
                self.remote_candidates.len() - 1
            }
        };

        // 7.3.1.4: triggered check.
        let pair_idx = self
            .form_pair(local_idx, remote_idx)
            .ok_or(IceDrop::Limit)?;
        let pair = &mut self.pairs[pair_idx];
        match pair.state {
            // A check of our own is already in flight or done; we keep it rather than cancelling.
            PairState::Succeeded | PairState::InProgress => {}
            PairState::Waiting | PairState::Frozen | PairState::Failed => {
                pair.state = PairState::Waiting;
                self.enqueue_triggered(pair_idx, false);
            }
        }

        // 7.3.1.5: the controlled agent honours USE-CANDIDATE.
        if !self.controlling && msg.use_candidate() {
            let pair = &mut self.pairs[pair_idx];
            if pair.state == PairState::Succeeded {
                pair.nominated = true;
                self.update_selected(now);
            } else {
                pair.nominate_on_success = true;
            }
        }
        Ok(())
    }

    /// A check on the path an ICE restart kept (the peer's consent, or its old generation's checks):
    /// answered with the old credentials; it teaches nothing about the new generation.
    fn on_old_request(
        &mut self,
        local: SocketAddr,
        from: SocketAddr,
        theirs: &[u8],
        msg: &StunMessage<'_>,
    ) -> Result<(), IceDrop> {
        let Some(old) = &self.old else {
            return Err(IceDrop::BadUsername);
        };
        if old.remote.ufrag.as_bytes() != theirs {
            return Err(IceDrop::BadUsername);
        }
        if !msg.has_integrity() {
            return Err(IceDrop::MissingIntegrity);
        }
        if !msg.verify_integrity(old.local.pwd.as_bytes()) {
            return Err(IceDrop::BadIntegrity);
        }
        let local_idx = self.find_local(local).ok_or(IceDrop::UnknownLocal)?;
        self.send_response(local_idx, from, msg.transaction_id(), None, true);
        Ok(())
    }

    /// A response to one of our checks or consent requests, RFC 8445 section 7.2.5.
    fn on_response(
        &mut self,
        now: Instant,
        local: SocketAddr,
        from: SocketAddr,
        msg: &StunMessage<'_>,
    ) -> Result<(), IceDrop> {
        let tid = msg.transaction_id();
        let ti = self
            .transactions
            .iter()
            .position(|t| t.id == tid)
            .ok_or(IceDrop::UnknownTransaction)?;
        let remote = if self.transactions[ti].old {
            self.old.as_ref().map(|o| &o.remote)
        } else {
            self.remote.as_ref()
        };
        let remote_pwd = remote
            .map(|r| r.pwd.as_bytes())
            .ok_or(IceDrop::UnknownTransaction)?;
        if !msg.has_integrity() {
            return Err(IceDrop::MissingIntegrity);
        }
        if !msg.verify_integrity(remote_pwd) {
            // RFC 8489 section 6.3.4: discard, the transaction goes on.
            return Err(IceDrop::BadIntegrity);
        }
        let tx = self.transactions.swap_remove(ti);
        if tx.old {
            let symmetric = from == tx.destination && self.find_local(local).is_some();
            if msg.class() == StunClass::SuccessResponse && symmetric && self.selected.is_none() {
                self.refresh_consent(now);
            }
            return Ok(());
        }
        let pair_idx = tx.pair;
        // 7.2.5.2.1: source and destination must be symmetric with the request.
        let symmetric = {
            let pair = &self.pairs[pair_idx];
            from == self.remote_candidates[pair.remote].addr
                && self.find_local(local) == Some(pair.local)
        };

        match tx.kind {
            TxKind::Consent => {
                if msg.class() == StunClass::SuccessResponse && symmetric {
                    self.pairs[pair_idx].last_response = Some(now);
                    if self.selected == Some(pair_idx) {
                        self.refresh_consent(now);
                    }
                }
            }
            TxKind::Check { use_candidate } => {
                if self.nominating == Some(pair_idx) && use_candidate {
                    self.nominating = None;
                }
                if msg.class() == StunClass::ErrorResponse {
                    if msg.error_code() == Some(ROLE_CONFLICT) {
                        // 7.2.5.1: take the other role than the one we claimed, retry the pair.
                        if tx.sent_controlling == self.controlling {
                            self.switch_role(!tx.sent_controlling);
                        }
                        self.pairs[pair_idx].state = PairState::Waiting;
                        self.enqueue_triggered(pair_idx, false);
                    } else {
                        self.pairs[pair_idx].state = PairState::Failed;
                    }
                    return Ok(());
                }
                if !symmetric {
                    self.pairs[pair_idx].state = PairState::Failed;
                    return Ok(());
                }
                // 7.2.5.3.2: the pair is valid (we use the checked pair itself as the valid pair:
                // our candidates are host candidates, so the mapped address adds nothing we use).
                let controlling = self.controlling;
                let pair = &mut self.pairs[pair_idx];
                pair.state = PairState::Succeeded;
                pair.last_response = Some(now);
                if (use_candidate && controlling) || (!controlling && pair.nominate_on_success) {
                    pair.nominated = true;
                }
                self.first_valid_at.get_or_insert(now);
                // 7.2.5.3.3: unfreeze pairs with the same foundation.
                let (l, r) = (self.pairs[pair_idx].local, self.pairs[pair_idx].remote);
                for i in 0..self.pairs.len() {
                    let same = self.same_foundation(i, l, r);
                    if self.pairs[i].state == PairState::Frozen && same {
                        self.pairs[i].state = PairState::Waiting;
                    }
                }
                self.update_selected(now);
                // Any authenticated success on the selected pair also proves consent (RFC 7675).
                if self.selected == Some(pair_idx) {
                    self.refresh_consent(now);
                }
            }
        }
        Ok(())
    }

    // ---- timers --------------------------------------------------------------------------------

    /// Everything time-driven, in order: retransmissions, start, nomination, one paced check,
    /// consent, failure.
    fn drive(&mut self, now: Instant) {
        if matches!(self.state, IceState::Closed | IceState::Failed) {
            return;
        }
        self.last_now = Some(now);
        self.run_transactions(now);

        if self.state == IceState::New && self.remote.is_some() && !self.pairs.is_empty() {
            self.set_state(IceState::Checking);
        }

        self.maybe_nominate(now);

        if self.state != IceState::New && self.next_check_at.is_none_or(|t| t <= now) {
            if let Some((pair, use_candidate)) = self.next_check() {
                self.send_request(now, pair, TxKind::Check { use_candidate });
                self.next_check_at = Some(now + self.config.ta);
            }
        }

        // Consent on the path media takes: the selected pair, or the one a restart keeps.
        if (self.selected.is_some() || self.old.is_some())
            && matches!(self.state, IceState::Connected | IceState::Disconnected)
        {
            let ok = *self.consent_ok.get_or_insert(now);
            if now >= ok + self.config.consent_timeout {
                self.fail();
                return;
            }
            if self.state == IceState::Connected && now >= ok + self.config.disconnected_after {
                self.set_state(IceState::Disconnected);
            }
            if self.consent_next.is_none_or(|t| t <= now) {
                match self.selected {
                    Some(sel) => self.send_request(now, sel, TxKind::Consent),
                    None => self.send_old_consent(now),
                }
                self.consent_next = Some(now + self.consent_jitter());
            }
        }

        if matches!(self.state, IceState::New | IceState::Checking) && self.remote.is_some() {
            let live = self.pairs.iter().any(|p| p.state != PairState::Failed)
                || self
                    .transactions
                    .iter()
                    .any(|t| matches!(t.kind, TxKind::Check { .. }));
            if live {
                self.idle_since = None;
            } else {
                let since = *self.idle_since.get_or_insert(now);
                if now >= since + self.failure_grace() {
                    self.fail();
                }
            }
        }
    }

    /// Retransmits due requests and times out finished ones (RFC 8489 section 6.2.1).
    fn run_transactions(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.transactions.len() {
            let tx = &mut self.transactions[i];
            if tx.deadline > now {
                i += 1;
                continue;
            }
            if tx.sends < self.config.max_requests {
                tx.sends += 1;
                tx.rto = tx.rto.saturating_mul(2).min(self.config.rto_max);
                tx.deadline = now + tx.rto;
                let contents = tx.bytes.clone();
                self.transmits.push_back(Transmit {
                    source: tx.source,
                    destination: tx.destination,
                    contents,
                });
                i += 1;
                continue;
            }
            let tx = self.transactions.swap_remove(i);
            if let (TxKind::Check { use_candidate }, false) = (tx.kind, tx.old) {
                // RFC 8445 section 7.2.5.2.3: no response means the pair failed.
                let pair = &mut self.pairs[tx.pair];
                if pair.state == PairState::InProgress || use_candidate {
                    pair.state = PairState::Failed;
                }
                if use_candidate && self.nominating == Some(tx.pair) {
                    self.nominating = None;
                }
            }
        }
    }

    /// Regular nomination by the controlling agent (RFC 8445 section 8.1.1): once a pair is valid,
    /// nominate the best valid pair when nothing better is still pending or the delay has passed.
    fn maybe_nominate(&mut self, now: Instant) {
        if !self.controlling
            || self.selected.is_some()
            || self.nominating.is_some()
            || self.remote.is_none()
        {
            return;
        }
        let Some(best) = self.best_valid() else {
            return;
        };
        let best_priority = self.pairs[best].priority;
        let pending_better = self.pairs.iter().any(|p| {
            p.priority > best_priority
                && matches!(
                    p.state,
                    PairState::Frozen | PairState::Waiting | PairState::InProgress
                )
        });
        let waited = self
            .first_valid_at
            .is_some_and(|t| now >= t + self.config.nomination_delay);
        if !pending_better || waited {
            self.nominating = Some(best);
            self.triggered.retain(|&(p, _)| p != best);
            self.triggered.push_front((best, true));
        }
    }

    /// The next check to send: a triggered one first, then (while nothing is selected) the
    /// highest-priority Waiting pair, else the highest-priority Frozen one (RFC 8445 section 6.1.4.2).
    fn next_check(&mut self) -> Option<(usize, bool)> {
        while let Some((pair, use_candidate)) = self.triggered.pop_front() {
            if use_candidate || self.pairs[pair].state == PairState::Waiting {
                return Some((pair, use_candidate));
            }
        }
        if self.selected.is_some() {
            return None;
        }
        let best_in = |state: PairState| {
            self.pairs
                .iter()
                .enumerate()
                .filter(|(_, p)| p.state == state)
                .max_by_key(|(_, p)| p.priority)
                .map(|(i, _)| i)
        };
        best_in(PairState::Waiting)
            .or_else(|| best_in(PairState::Frozen))
            .map(|i| (i, false))
    }

    /// Whether a paced check would be sent now if the pacing timer allowed.
    fn has_check_work(&self) -> bool {
        self.triggered
            .iter()
            .any(|&(p, uc)| uc || self.pairs[p].state == PairState::Waiting)
            || (self.selected.is_none()
                && self
                    .pairs
                    .iter()
                    .any(|p| matches!(p.state, PairState::Waiting | PairState::Frozen)))
    }

    /// RFC 7675 section 5.1: the interval is randomised over 0.8..=1.2 of the base.
    fn consent_jitter(&self) -> Duration {
        let mut r = [0u8; 2];
        random_bytes(&mut r);
        let permille = 800 + u32::from(u16::from_be_bytes(r)) % 401;
        self.config.consent_interval * permille / 1000
    }

    fn failure_grace(&self) -> Duration {
        if self.pairs.is_empty() {
            self.config.no_candidates_timeout
        } else {
            self.config.all_failed_grace
        }
    }

    // ---- output --------------------------------------------------------------------------------

    /// Sends a Binding request on `pair` (RFC 8445 section 7.2.2) and starts its transaction.
    fn send_request(&mut self, now: Instant, pair_idx: usize, kind: TxKind) {
        let Some(remote) = &self.remote else {
            return;
        };
        let pair = &self.pairs[pair_idx];
        let local = &self.local_candidates[pair.local];
        let (source, destination) = (local.addr, self.remote_candidates[pair.remote].addr);
        let use_candidate = matches!(
            kind,
            TxKind::Check {
                use_candidate: true
            }
        );
        let (id, bytes) = self.binding_request(
            &self.outgoing_username,
            local.priority,
            use_candidate,
            remote.pwd.as_bytes(),
        );
        self.start_transaction(now, id, bytes, (source, destination), pair_idx, kind, false);
        let pair = &mut self.pairs[pair_idx];
        if matches!(kind, TxKind::Check { .. }) && pair.state != PairState::Succeeded {
            pair.state = PairState::InProgress;
        }
    }

    /// A consent request on the path an ICE restart kept, with its generation's credentials.
    fn send_old_consent(&mut self, now: Instant) {
        let Some(old) = &self.old else {
            return;
        };
        let priority = self
            .find_local(old.source)
            .map_or(0, |i| self.local_candidates[i].priority);
        let (id, bytes) =
            self.binding_request(&old.username, priority, false, old.remote.pwd.as_bytes());
        let path = (old.source, old.destination);
        self.start_transaction(now, id, bytes, path, 0, TxKind::Consent, true);
    }

    /// A Binding request under a fresh transaction id: USERNAME, the PRIORITY a peer-reflexive
    /// candidate of ours would have (7.2.2), our role, USE-CANDIDATE when nominating, integrity
    /// with the peer's `pwd`.
    fn binding_request(
        &self,
        username: &[u8],
        local_priority: u32,
        use_candidate: bool,
        pwd: &[u8],
    ) -> ([u8; 12], Vec<u8>) {
        let mut id = [0u8; 12];
        random_bytes(&mut id);
        let prflx_priority =
            (CandidateKind::PeerReflexive.type_preference() << 24) | (local_priority & 0x00FF_FFFF);
        let mut bytes = Vec::with_capacity(128);
        let mut w = StunWriter::new(&mut bytes, StunClass::Request, BINDING, id);
        w.username(username).priority(prflx_priority);
        if self.controlling {
            w.ice_controlling(self.tie_breaker);
            if use_candidate {
                w.use_candidate();
            }
        } else {
            w.ice_controlled(self.tie_breaker);
        }
        w.finish(Some(pwd));
        (id, bytes)
    }

    /// Sends a request and starts its transaction (RFC 8489 section 6.2.1 retransmissions).
    #[allow(clippy::too_many_arguments)]
    fn start_transaction(
        &mut self,
        now: Instant,
        id: [u8; 12],
        bytes: Vec<u8>,
        (source, destination): (SocketAddr, SocketAddr),
        pair: usize,
        kind: TxKind,
        old: bool,
    ) {
        self.transmits.push_back(Transmit {
            source,
            destination,
            contents: bytes.clone(),
        });
        self.transactions.push(Transaction {
            id,
            pair,
            kind,
            old,
            source,
            destination,
            sent_controlling: self.controlling,
            bytes,
            sends: 1,
            rto: self.config.rto_initial,
            deadline: now + self.config.rto_initial,
        });
    }

    /// Answers a check: 200 with XOR-MAPPED-ADDRESS, or an error (487), with MESSAGE-INTEGRITY
    /// (our password, or the kept path's with `old`) and FINGERPRINT.
    fn send_response(
        &mut self,
        local_idx: usize,
        to: SocketAddr,
        tid: [u8; 12],
        error: Option<u16>,
        old: bool,
    ) {
        let mut bytes = Vec::with_capacity(80);
        let class = if error.is_some() {
            StunClass::ErrorResponse
        } else {
            StunClass::SuccessResponse
        };
        let mut w = StunWriter::new(&mut bytes, class, BINDING, tid);
        match error {
            None => w.xor_mapped_address(to),
            Some(code) => w.error_code(code, "Role Conflict"),
        };
        let pwd = match &self.old {
            Some(o) if old => &o.local.pwd,
            _ => &self.local.pwd,
        };
        w.finish(Some(pwd.as_bytes()));
        self.transmits.push_back(Transmit {
            source: self.local_candidates[local_idx].addr,
            destination: to,
            contents: bytes,
        });
    }

    // ---- bookkeeping ---------------------------------------------------------------------------

    fn set_state(&mut self, state: IceState) {
        if self.state != state {
            self.state = state;
            self.events.push_back(IceEvent::StateChanged(state));
        }
    }

    /// An authenticated success response arrived on the selected pair.
    fn refresh_consent(&mut self, now: Instant) {
        self.consent_ok = Some(now);
        if self.state == IceState::Disconnected {
            self.set_state(IceState::Connected);
        }
    }

    fn fail(&mut self) {
        self.transactions.clear();
        self.triggered.clear();
        self.set_state(IceState::Failed);
    }

    /// The local candidate a datagram arrived on: exact address, else (for a wildcard-bound
    /// socket) the first candidate of the same family and port.
    fn find_local(&self, addr: SocketAddr) -> Option<usize> {
        self.local_candidates
            .iter()
            .position(|c| c.addr == addr)
            .or_else(|| {
                if !addr.ip().is_unspecified() {
                    return None;
                }
                self.local_candidates.iter().position(|c| {
                    c.addr.port() == addr.port() && c.addr.is_ipv4() == addr.is_ipv4()
                })
            })
    }

    /// Finds or creates the pair (RFC 8445 section 6.1.2). None for mixed address families or
    /// transport protocols, or when the pair limit is reached.
    fn form_pair(&mut self, local: usize, remote: usize) -> Option<usize> {
        if let Some(i) = self
            .pairs
            .iter()
            .position(|p| p.local == local && p.remote == remote)
        {
            return Some(i);
        }
        let (l, r) = (
            &self.local_candidates[local],
            &self.remote_candidates[remote],
        );
        if l.addr.is_ipv4() != r.addr.is_ipv4()
            || l.tcp != r.tcp
            || self.pairs.len() >= self.config.max_pairs
        {
            return None;
        }
        let priority = pair_priority(self.controlling, l.priority, r.priority);
        // 6.1.2.6: one pair per foundation starts Waiting, the others Frozen.
        let busy = (0..self.pairs.len()).any(|i| {
            matches!(
                self.pairs[i].state,
                PairState::Waiting | PairState::InProgress
            ) && self.same_foundation(i, local, remote)
        });
        self.pairs.push(CandidatePair {
            local,
            remote,
            priority,
            state: if busy {
                PairState::Frozen
            } else {
                PairState::Waiting
            },
            nominated: false,
            nominate_on_success: false,
            last_response: None,
        });
        Some(self.pairs.len() - 1)
    }

    /// Whether pair `i` has the foundation of (local, remote): both candidates' foundations match.
    fn same_foundation(&self, i: usize, local: usize, remote: usize) -> bool {
        let p = &self.pairs[i];
        self.local_candidates[p.local].foundation == self.local_candidates[local].foundation
            && self.remote_candidates[p.remote].foundation
                == self.remote_candidates[remote].foundation
    }

    fn enqueue_triggered(&mut self, pair: usize, use_candidate: bool) {
        if !self.triggered.iter().any(|&(p, _)| p == pair) {
            self.triggered.push_back((pair, use_candidate));
        }
    }

    fn switch_role(&mut self, controlling: bool) {
        self.controlling = controlling;
        self.nominating = None;
        self.triggered.retain(|&(_, uc)| !uc);
        self.recompute_priorities();
    }

    fn recompute_priorities(&mut self) {
        for p in &mut self.pairs {
            p.priority = pair_priority(
                self.controlling,
                self.local_candidates[p.local].priority,
                self.remote_candidates[p.remote].priority,
            );
        }
    }

    /// Highest-priority valid (succeeded) pair.
    fn best_valid(&self) -> Option<usize> {
        self.pairs
            .iter()
            .enumerate()
            .filter(|(_, p)| p.state == PairState::Succeeded)
            .max_by_key(|(_, p)| p.priority)
            .map(|(i, _)| i)
    }

    /// Selects the highest-priority nominated valid pair (RFC 8445 section 8.1.1) and reports it.
    fn update_selected(&mut self, now: Instant) {
        let best = self
            .pairs
            .iter()
            .enumerate()
            .filter(|(_, p)| p.nominated && p.state == PairState::Succeeded)
            .max_by_key(|(_, p)| p.priority)
            .map(|(i, _)| i);
        let Some(best) = best else {
            return;
        };
        if self.selected == Some(best) {
            return;
        }
        self.selected = Some(best);
        if self.old.take().is_some() {
            self.transactions.retain(|t| !t.old);
        }
        let pair = &self.pairs[best];
        let (local, remote) = (
            self.local_candidates[pair.local].addr,
            self.remote_candidates[pair.remote].addr,
        );
        self.consent_ok = Some(pair.last_response.unwrap_or(now));
        self.consent_next = Some(now + self.consent_jitter());
        self.events
            .push_back(IceEvent::SelectedPair { local, remote });
        self.set_state(IceState::Connected);
    }
}
