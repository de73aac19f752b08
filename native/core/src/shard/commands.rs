//! The seam's Commands applied on the shard thread. A command that names something unknown answers
//! with `Event::CommandFailed`; none of them can stop the shard except `Shutdown`.

use std::time::Instant;

use super::egress::Io;
use super::{Shard, State, RESYNC_AFTER_RESTART};
use crate::domain::{ForceMute, MediaKind, TransportId};
use crate::io::RecvBatch;
use crate::router::Router;
use crate::seam::{Command, Event};
use crate::transport::Transport;

impl Shard {
    /// Applies one control command. Returns false on Shutdown.
    pub fn handle_command(&mut self, now: Instant, cmd: Command) -> bool {
        self.state.commands_seen += 1;
        let keep_going = self
            .state
            .handle_command(now, cmd, &mut self.io, &self.recv);
        self.io.flush();
        keep_going
    }
}

impl State {
    fn handle_command(
        &mut self,
        now: Instant,
        cmd: Command,
        io: &mut Io,
        recv: &RecvBatch,
    ) -> bool {
        match cmd {
            Command::CreateRouter { router, feedback } => {
                self.routers
                    .entry(router)
                    .or_insert_with(|| Router::new(router, feedback));
            }
            Command::CloseRouter { router } => {
                if let Some(r) = self.routers.get(&router) {
                    for t in r.members().to_vec() {
                        self.close_transport(now, t, io);
                    }
                }
                self.routers.remove(&router);
            }
            Command::CreateTransport {
                router,
                transport,
                ice,
                controlling,
            } => {
                let Some(r) = self.routers.get_mut(&router) else {
                    self.command_failed(transport, format!("no router {router}"));
                    return true;
                };
                if self.transports.contains_key(&transport) {
                    self.command_failed(transport, "transport exists".into());
                    return true;
                }
                let mut t = Transport::new(
                    transport,
                    router,
                    ice,
                    controlling,
                    self.cert.clone(),
                    &self.local_addrs,
                );
                if let Some(addr) = self.tcp_local {
                    t.add_tcp_candidate(addr);
                }
                self.by_ufrag
                    .insert(t.local_ufrag().as_bytes().to_vec(), transport);
                r.add_member(transport);
                self.transports.insert(transport, t);
            }
            Command::ConnectTransport {
                transport,
                remote_ice,
                fingerprints,
                remote_setup,
            } => {
                let Some(t) = self.transports.get_mut(&transport) else {
                    self.command_failed(transport, "no such transport".into());
                    return true;
                };
                t.connect(now, remote_ice, fingerprints, remote_setup);
                self.after_transport(now, transport, io);
            }
            Command::AddRemoteCandidates {
                transport,
                candidates,
            } => {
                let Some(t) = self.transports.get_mut(&transport) else {
                    self.command_failed(transport, "no such transport".into());
                    return true;
                };
                t.add_remote_candidates(now, &candidates);
                self.after_transport(now, transport, io);
            }
            Command::RestartIce { transport, ice } => {
                let Some(t) = self.transports.get_mut(&transport) else {
                    self.command_failed(transport, "no such transport".into());
                    return true;
                };
                t.restart_ice(now, ice);
                // A restart follows a failing path, as a rule: what the peer sends meanwhile is lost on
                // the way in, so its receivers resume at a switch point if its stream comes back with a gap.
                let router = t.router;
                if let Some(r) = self.routers.get_mut(&router) {
                    r.resync_sender(transport, now + RESYNC_AFTER_RESTART);
                }
                // STUN finds it by the ufrags it accepts now: the new one, and the old one while
                // the old path carries media.
                let accepted: Vec<Vec<u8>> =
                    t.accepted_ufrags().map(|u| u.as_bytes().to_vec()).collect();
                self.by_ufrag
                    .retain(|u, id| *id != transport || accepted.contains(u));
                for u in accepted {
                    self.by_ufrag.insert(u, transport);
                }
                self.after_transport(now, transport, io);
            }
            Command::SetSources { transport, sources } => {
                let Some(t) = self.transports.get(&transport) else {
                    self.command_failed(transport, "no such transport".into());
                    return true;
                };
                let Some(r) = self.routers.get_mut(&t.router) else {
                    return true;
                };
                let refused = r.set_sources(transport, &sources);
                if !refused.is_empty() {
                    self.command_failed(
                        transport,
                        format!("ssrcs owned by another endpoint: {refused:?}"),
                    );
                }
            }
            Command::SetPayloadTypes { transport, types } => {
                let Some(t) = self.transports.get(&transport) else {
                    self.command_failed(transport, "no such transport".into());
                    return true;
                };
                if let Some(r) = self.routers.get_mut(&t.router) {
                    r.set_payload_types(transport, &types);
                }
            }
            Command::SetProbeTarget { transport, bps } => match self.transports.get_mut(&transport)
            {
                Some(t) => t.set_probe_target(bps),
                None => self.command_failed(transport, "no such transport".into()),
            },
            Command::SetAllocation { transport, targets } => {
                let Some(router) = self.transports.get(&transport).map(|t| t.router) else {
                    self.command_failed(transport, "no such transport".into());
                    return true;
                };
                let wanted = self
                    .routers
                    .get_mut(&router)
                    .map(|r| r.set_allocation(now, transport, targets))
                    .unwrap_or_default();
                for ssrc in wanted {
                    self.request_keyframe(now, router, ssrc, io);
                }
            }
            Command::SetHeaderExtensions { transport, ids } => {
                let Some(t) = self.transports.get(&transport) else {
                    self.command_failed(transport, "no such transport".into());
                    return true;
                };
                let router = t.router;
                let feedback_ssrc = self
                    .routers
                    .get(&router)
                    .map_or(0, |r| r.feedback.for_kind(MediaKind::Video));
                if let Some(t) = self.transports.get_mut(&transport) {
                    t.set_transport_cc_id(
                        now,
                        ids.transport_cc,
                        feedback_ssrc,
                        self.cc_config,
                        self.cc_pacing,
                    );
                    if let Some(dir) = &self.cc_trace_dir {
                        t.trace_cc(dir);
                    }
                    let remb = ids.abs_send_time.filter(|_| ids.transport_cc.is_none());
                    t.set_remb(now, remb);
                }
                if let Some(r) = self.routers.get_mut(&router) {
                    r.set_header_extensions(transport, ids);
                }
            }
            Command::RequestKeyframe { transport, ssrc } => {
                let Some(router) = self.transports.get(&transport).map(|t| t.router) else {
                    self.command_failed(transport, "no such transport".into());
                    return true;
                };
                self.request_keyframe(now, router, ssrc, io);
            }
            Command::SetForceMute {
                transport,
                audio,
                video,
            } => {
                let Some(t) = self.transports.get_mut(&transport) else {
                    self.command_failed(transport, "no such transport".into());
                    return true;
                };
                let was = t.force_mute;
                t.force_mute = ForceMute { audio, video };
                if was.video && !video {
                    self.keyframes_from(now, transport, io);
                }
            }
            Command::CloseTransport { transport } => self.close_transport(now, transport, io),
            Command::GetStats { request } => {
                let snapshot = Box::new(self.snapshot(io, recv));
                self.events.push(Event::Stats { request, snapshot });
            }
            Command::Shutdown => return false,
        }
        self.next_sweep = now;
        true
    }

    fn command_failed(&mut self, transport: TransportId, detail: String) {
        self.events.push(Event::CommandFailed { transport, detail });
    }

    fn close_transport(&mut self, now: Instant, id: TransportId, io: &mut Io) {
        let Some(t) = self.transports.get_mut(&id) else {
            return;
        };
        t.close();
        self.after_transport(now, id, io);
        let Some(t) = self.transports.remove(&id) else {
            return;
        };
        // Every ufrag it had: one a restart retired may still be mapped.
        self.by_ufrag.retain(|_, v| *v != id);
        self.by_addr.retain(|_, v| *v != id);
        if let Some(r) = self.routers.get_mut(&t.router) {
            r.remove_member(id);
        }
    }
}
