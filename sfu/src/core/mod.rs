//! The sans-IO router.
//!
//! [`Core`] owns one [`str0m::Rtc`] per participant (ICE-lite, RTP mode, a UDP and a passive
//! TCP host candidate as configured) and the room graph. Its methods fall into four groups, like quinn-proto's
//! `Connection`:
//!
//! - inputs: [`Core::handle_datagram`], [`Core::handle_timeout`], [`Core::handle_command`];
//! - outputs, drained after every input: [`Core::poll_transmit`], [`Core::poll_event`],
//!   [`Core::poll_timeout`];
//! - getters: [`Core::stats`];
//! - construction: [`Core::new`].
//!
//! Time is always an argument. The core never reads a clock, blocks or touches a socket, so a
//! test can run a whole room in virtual time.
//!
//! # Routing
//!
//! A packet (a UDP datagram or an ICE-TCP frame) is routed to its participant in O(1): by
//! transport and remote address, or for the first STUN packets from a new address by the local
//! ICE ufrag in its USERNAME; the participant's session then authenticates it (`Rtc::accepts`)
//! before the new address is remembered.
//!
//! Every RTP packet a publisher sends on a track is written to a send-only m-line (a leg) of
//! every other admitted participant of the room; str0m then does RTCP, NACK/RTX and TWCC per
//! leg. Whether a packet goes to a leg, and with which payload type and (rebased) sequence
//! number, is decided per packet by the leg's forwarder (`forwarder.rs`) from plain values the
//! routing code (`routing.rs`) reads once per packet; no session, clock or socket is involved
//! in the decision. Keyframe requests from subscribers
//! travel back to the publisher, at most one per [`Config::keyframe_interval`] per track.
//! The audio levels on forwarded packets (RFC 6464) decide each room's active speaker
//! (`speaker.rs`), reported as [`Event::ActiveSpeaker`] when it changes.
//!
//! # Simulcast and the subscriber's link
//!
//! A simulcast track has a layer per rid (`track.rs`); each leg forwards one at a time and
//! switches at a keyframe of its target, rewriting the numbering so the subscriber sees one
//! stream (`forwarder.rs`). Every 500 ms, and when an estimate or a layer changes, each
//! subscriber's targets are decided (`downlink.rs`) by a pure allocator (`allocator.rs`) from
//! str0m's send-side bandwidth estimate towards it, the layers' measured rates and the size it
//! renders each video at ([`Command::VideoSize`]); a leg whose lowest layer does not fit is
//! paused ([`Event::TrackPaused`]) so its audio keeps the link.

mod allocator;
mod command;
mod config;
mod demux;
mod downlink;
mod error;
mod event;
mod forwarder;
mod ids;
mod negotiate;
mod outputs;
mod participant;
mod quality;
mod red;
mod room;
mod routing;
mod speaker;
mod stun;
mod timers;
mod track;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use str0m::Input;
use str0m::crypto::CryptoProvider;
use str0m::net::Receive;

pub use command::Command;
pub use config::Config;
pub use error::CoreError;
pub use event::{Event, LeaveReason, Transmit};
pub use ids::{ParticipantId, RoomId, TrackId, Transport};
pub use quality::Quality;

use demux::Demux;
use outputs::{Outputs, Work};
use participant::Participant;
use room::Room;
use timers::Timer;
use track::Track;

/// The RTP header extension of transport-wide congestion control feedback.
const TWCC_EXTENSION: &str = "transport-wide-cc-extensions";

/// Counts of what the core holds and has done, for metrics and for tests that check that
/// leaving frees everything.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Rooms with at least one participant.
    pub rooms: usize,
    /// Participants in all rooms.
    pub participants: usize,
    /// Published tracks.
    pub tracks: usize,
    /// (track, subscriber) forwarding legs.
    pub legs: usize,
    /// Remote addresses known to the demultiplexer.
    pub addresses: usize,
    /// ICE ufrags known to the demultiplexer.
    pub ufrags: usize,
    /// Armed timers.
    pub timers: usize,
    /// RTP packets written to subscribers.
    pub forwarded_packets: u64,
    /// Keyframe requests sent to publishers.
    pub keyframe_requests_sent: u64,
    /// Keyframe requests merged into another by the throttle.
    pub keyframe_requests_throttled: u64,
    /// Datagrams dropped: malformed, from an unknown source, or refused by str0m.
    pub dropped_datagrams: u64,
    /// Datagrams fed to [`Core::handle_datagram`], dropped or not.
    pub datagrams_in: u64,
    /// Bytes of those datagrams.
    pub bytes_in: u64,
    /// Datagrams handed out by [`Core::poll_transmit`].
    pub datagrams_out: u64,
    /// Bytes of those datagrams.
    pub bytes_out: u64,
    /// NACKs subscribers sent (str0m answers them with retransmissions).
    pub nacks_received: u64,
    /// PLIs subscribers sent (each one feeds the throttled keyframe request path).
    pub plis_received: u64,
    /// Times a leg switched to a higher simulcast layer.
    pub layer_switches_up: u64,
    /// Times a leg switched to a lower simulcast layer.
    pub layer_switches_down: u64,
    /// Legs paused now because the subscriber's link holds none of the track's video layers.
    pub paused_legs: usize,
    /// Times a leg was paused for bandwidth.
    pub legs_paused: u64,
    /// Keyframes the core wanted from publishers, by reason, before the throttle merged any
    /// ([`Stats::keyframe_requests_sent`] is what left).
    pub keyframe_reasons: KeyframeReasons,
    /// Subscribers getting redundant (RED) audio now, their downlink losing packets.
    pub red_subscribers: usize,
    /// Audio packets the core wrapped in RED with the previous one for a subscriber.
    pub red_built: u64,
    /// A publisher's RED packets cut to their primary block for a subscriber without RED.
    pub red_cut: u64,
    /// A publisher's RED packets dropped as malformed.
    pub red_malformed: u64,
}

/// Why the core asks a publisher for a keyframe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyframeReason {
    /// A subscriber sent a PLI or FIR.
    Subscriber,
    /// A new subscriber's leg starts with one.
    NewSubscriber,
    /// A leg switches layer (or resumes) at a keyframe of its target.
    LayerSwitch,
    /// A leg lost its layer's keyframe (forwarded while switching) and waits for another.
    MissedKeyframe,
    /// A video track was unmuted.
    Unmute,
}

/// Keyframe requests counted by [`KeyframeReason`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyframeReasons {
    /// A subscriber sent a PLI or FIR.
    pub subscriber: u64,
    /// A new subscriber's leg needed one to start.
    pub new_subscriber: u64,
    /// A leg switched layer or resumed.
    pub layer_switch: u64,
    /// A leg waits for a keyframe it missed.
    pub missed_keyframe: u64,
    /// A video track was unmuted.
    pub unmute: u64,
}

impl KeyframeReasons {
    fn count(&mut self, reason: KeyframeReason) {
        let counter = match reason {
            KeyframeReason::Subscriber => &mut self.subscriber,
            KeyframeReason::NewSubscriber => &mut self.new_subscriber,
            KeyframeReason::LayerSwitch => &mut self.layer_switch,
            KeyframeReason::MissedKeyframe => &mut self.missed_keyframe,
            KeyframeReason::Unmute => &mut self.unmute,
        };
        *counter += 1;
    }
}

#[derive(Debug, Default)]
struct Counters {
    forwarded_packets: u64,
    keyframe_requests_sent: u64,
    keyframe_requests_throttled: u64,
    dropped_datagrams: u64,
    datagrams_in: u64,
    bytes_in: u64,
    datagrams_out: u64,
    bytes_out: u64,
    layer_switches_up: u64,
    layer_switches_down: u64,
    legs_paused: u64,
    keyframe_reasons: KeyframeReasons,
    red_built: u64,
    red_cut: u64,
    red_malformed: u64,
}

/// The SFU router for any number of rooms. See the [module documentation](self).
pub struct Core {
    config: Config,
    crypto: Arc<CryptoProvider>,
    rooms: HashMap<RoomId, Room>,
    participants: HashMap<ParticipantId, Participant>,
    tracks: HashMap<TrackId, Track>,
    demux: Demux,
    out: Outputs,
    counters: Counters,
}

impl Core {
    /// A core with no rooms, using str0m's compiled-in crypto provider (aws-lc-rs).
    pub fn new(config: Config) -> Self {
        Core {
            config,
            crypto: Arc::new(str0m::crypto::from_feature_flags()),
            rooms: HashMap::new(),
            participants: HashMap::new(),
            tracks: HashMap::new(),
            demux: Demux::default(),
            out: Outputs::default(),
            counters: Counters::default(),
        }
    }

    /// Feeds one UDP datagram received at `now` from `source` on the local address
    /// `destination`. Same as [`Core::handle_packet`] with [`Transport::Udp`].
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        source: SocketAddr,
        destination: SocketAddr,
        datagram: &[u8],
    ) -> Result<(), CoreError> {
        self.handle_packet(now, Transport::Udp, source, destination, datagram)
    }

    /// Feeds one packet received at `now` from `source` on the local address `destination`:
    /// a UDP datagram, or one RFC 4571 frame (without its length) from a TCP connection, where
    /// `source` is the connection's remote address and `destination` the announced TCP
    /// candidate.
    ///
    /// An error means the packet was dropped (and counted); the core is unaffected.
    pub fn handle_packet(
        &mut self,
        now: Instant,
        transport: Transport,
        source: SocketAddr,
        destination: SocketAddr,
        packet: &[u8],
    ) -> Result<(), CoreError> {
        self.counters.datagrams_in += 1;
        self.counters.bytes_in += packet.len() as u64;
        let result = self.route_packet(now, transport, source, destination, packet);
        if result.is_err() {
            self.counters.dropped_datagrams += 1;
        }
        self.run(now);
        result
    }

    /// Whether `packet` is a STUN message naming the local ICE ufrag of a participant of this
    /// core: how a driver finds the core that must take a new TCP connection from its first
    /// frame. Nothing changes; the participant's session still authenticates the message.
    pub fn expects(&self, packet: &[u8]) -> bool {
        self.demux.by_stun(packet).is_some()
    }

    fn route_packet(
        &mut self,
        now: Instant,
        transport: Transport,
        source: SocketAddr,
        destination: SocketAddr,
        packet: &[u8],
    ) -> Result<(), CoreError> {
        let receive = Receive::new(transport.protocol(), source, destination, packet)
            .map_err(|_| CoreError::Malformed)?;
        let endpoint = (transport, source);
        let (id, new_address) = self
            .demux
            .lookup(endpoint, packet)
            .ok_or(CoreError::UnknownSource)?;
        let participant = self
            .participants
            .get_mut(&id)
            .ok_or(CoreError::UnknownSource)?;
        let input = Input::Receive(now, receive);
        // str0m checks STUN integrity here, and that anything else comes from a candidate
        // pair ICE has validated; without it a forged datagram would reach the session.
        if !participant.rtc.accepts(&input) {
            return Err(CoreError::UnknownSource);
        }
        if new_address {
            self.demux.learn(id, endpoint);
        }
        let result = participant.rtc.handle_input(input);
        participant.drain(&mut self.out);
        Ok(result?)
    }

    /// Advances time to `now`: everything whose deadline has passed runs.
    pub fn handle_timeout(&mut self, now: Instant) {
        for timer in self.out.timers.take_due(now) {
            match timer {
                Timer::Rtc(id) => {
                    if let Some(participant) = self.participants.get_mut(&id) {
                        let result = participant.rtc.handle_input(Input::Timeout(now));
                        participant.drain(&mut self.out);
                        if let Err(error) = result {
                            self.out.work.push_back(Work::Fail {
                                participant: id,
                                error,
                            });
                        }
                    }
                }
                Timer::Keyframe(track, layer) => self.send_deferred_keyframe(now, track, layer),
                Timer::Speakers(room) => self.decide_speaker(now, room),
                Timer::Allocate(participant) => self.allocate_tick(now, participant),
            }
        }
        self.run(now);
    }

    /// Applies a command from signaling. On error nothing changed.
    pub fn handle_command(&mut self, now: Instant, command: Command) -> Result<(), CoreError> {
        let result = match command {
            Command::Join {
                room,
                participant,
                offer,
                waiting,
            } => self.join(now, room, participant, offer, waiting),
            Command::Offer { participant, offer } => self.accept_offer(now, participant, offer),
            Command::Answer {
                participant,
                answer,
            } => self.accept_answer(now, participant, answer),
            Command::Admit { participant } => self.admit(participant),
            Command::Leave { participant } => self.depart(participant, LeaveReason::Left),
            Command::Remove { participant } => self.depart(participant, LeaveReason::Removed),
            Command::Mute { track, muted } => self.mute(now, track, muted),
            Command::VideoSize {
                subscriber,
                track,
                width,
                height,
            } => self.video_size(now, subscriber, track, width, height),
        };
        self.run(now);
        result
    }

    /// The next datagram to send, if any.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        let transmit = self.out.transmits.pop_front()?;
        self.counters.datagrams_out += 1;
        self.counters.bytes_out += transmit.contents.len() as u64;
        Some(transmit)
    }

    /// The next event for signaling, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.out.events.pop_front()
    }

    /// When [`Core::handle_timeout`] must be called next; `None` while the core is empty.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.out.timers.next()
    }

    /// The configuration the core was built with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// What the core currently holds.
    pub fn stats(&self) -> Stats {
        Stats {
            rooms: self.rooms.len(),
            participants: self.participants.len(),
            tracks: self.tracks.len(),
            legs: self.tracks.values().map(|t| t.legs.len()).sum(),
            addresses: self.demux.addr_count(),
            ufrags: self.demux.ufrag_count(),
            timers: self.out.timers.len(),
            forwarded_packets: self.counters.forwarded_packets,
            keyframe_requests_sent: self.counters.keyframe_requests_sent,
            keyframe_requests_throttled: self.counters.keyframe_requests_throttled,
            dropped_datagrams: self.counters.dropped_datagrams,
            datagrams_in: self.counters.datagrams_in,
            bytes_in: self.counters.bytes_in,
            datagrams_out: self.counters.datagrams_out,
            bytes_out: self.counters.bytes_out,
            nacks_received: self.out.nacks_received,
            plis_received: self.out.plis_received,
            layer_switches_up: self.counters.layer_switches_up,
            layer_switches_down: self.counters.layer_switches_down,
            paused_legs: self
                .tracks
                .values()
                .flat_map(|track| track.legs.values())
                .filter(|leg| leg.forwarder.target().is_none())
                .count(),
            legs_paused: self.counters.legs_paused,
            keyframe_reasons: self.counters.keyframe_reasons,
            red_subscribers: self
                .participants
                .values()
                .filter(|p| p.downlink.red.on())
                .count(),
            red_built: self.counters.red_built,
            red_cut: self.counters.red_cut,
            red_malformed: self.counters.red_malformed,
        }
    }

    /// Processes queued follow-up work until none is left.
    fn run(&mut self, now: Instant) {
        while let Some(work) = self.out.work.pop_front() {
            match work {
                Work::Forward { track, rid, packet } => self.forward(now, track, rid, &packet),
                Work::Publish {
                    participant,
                    mid,
                    kind,
                } => self.publish(participant, mid, kind),
                Work::Unpublish { track } => self.unpublish_live(track),
                Work::Keyframe {
                    track,
                    subscriber,
                    kind,
                } => {
                    self.request_keyframe(now, track, subscriber, kind, KeyframeReason::Subscriber)
                }
                Work::Allocate { participant } => self.allocate(now, participant),
                Work::LayerPaused { track, rid, paused } => {
                    self.layer_paused(now, track, rid, paused)
                }
                Work::Fail { participant, error } => {
                    tracing::warn!(%participant, %error, "WebRTC session failed");
                    let _ = self.depart(participant, LeaveReason::Failed);
                }
            }
        }
    }

    fn join(
        &mut self,
        now: Instant,
        room: RoomId,
        id: ParticipantId,
        offer: Option<str0m::change::SdpOffer>,
        waiting: bool,
    ) -> Result<(), CoreError> {
        if self.participants.contains_key(&id) {
            return Err(CoreError::DuplicateParticipant(id));
        }
        let max = self.config.max_participants_per_room;
        if self
            .rooms
            .get(&room)
            .is_some_and(|r| r.members.len() >= max)
        {
            return Err(CoreError::RoomFull { room, max });
        }
        // Send-side estimation needs the client's transport-wide feedback. Without it str0m
        // would still pace the client's media at its initial estimate, so a client that does
        // not offer the extension (some non-browser stacks) gets no estimator at all.
        let bwe = offer
            .as_ref()
            .is_none_or(|offer| offer.to_sdp_string().contains(TWCC_EXTENSION));
        let mut participant =
            Participant::new(id, room, waiting, &self.config, &self.crypto, now, bwe)?;
        let answer = match offer {
            Some(offer) => {
                let offer = negotiate::publishing_only(offer, |_| false)?;
                Some(participant.rtc.sdp_api().accept_offer(offer)?)
            }
            None => {
                participant.negotiation.recv_lines = true;
                None
            }
        };
        self.demux.register(id, participant.ufrag.clone());
        self.rooms.entry(room).or_default().members.push(id);
        self.out.events.push_back(Event::Joined {
            room,
            participant: id,
            waiting,
        });
        if let Some(answer) = answer {
            self.out.events.push_back(Event::Answer {
                participant: id,
                answer,
            });
        }
        participant.drain(&mut self.out);
        self.participants.insert(id, participant);
        self.out
            .timers
            .set(Timer::Allocate(id), now + downlink::ALLOCATE_EVERY);
        if !waiting {
            self.subscribe_to_room(id);
        }
        self.run(now);
        self.negotiate(id);
        Ok(())
    }

    fn admit(&mut self, id: ParticipantId) -> Result<(), CoreError> {
        let participant = self
            .participants
            .get_mut(&id)
            .ok_or(CoreError::UnknownParticipant(id))?;
        if !participant.waiting {
            return Err(CoreError::NotWaiting(id));
        }
        participant.waiting = false;
        let room = participant.room;
        let published: Vec<TrackId> = participant
            .published
            .iter()
            .map(|&mid| TrackId {
                participant: id,
                mid,
            })
            .collect();
        self.out.events.push_back(Event::Admitted {
            room,
            participant: id,
        });
        self.subscribe_to_room(id);
        for track in published {
            self.subscribe_room_to(track);
        }
        Ok(())
    }

    fn mute(&mut self, now: Instant, id: TrackId, muted: bool) -> Result<(), CoreError> {
        let track = self
            .tracks
            .get_mut(&id)
            .ok_or(CoreError::UnknownTrack(id))?;
        track.muted = muted;
        let is_video = track.kind.is_video();
        let room = self
            .participants
            .get(&id.participant)
            .map(|p| p.room)
            .ok_or(CoreError::UnknownParticipant(id.participant))?;
        self.out.events.push_back(Event::TrackMuted {
            room,
            track: id,
            muted,
        });
        if !muted && is_video {
            self.request_keyframes(
                now,
                id,
                str0m::media::KeyframeRequestKind::Pli,
                KeyframeReason::Unmute,
            );
        }
        Ok(())
    }

    /// Removes a participant and frees everything it held: its session, its addresses and
    /// ufrag, its timers, its tracks and their legs, its legs of others' tracks, and its room
    /// once empty.
    fn depart(&mut self, id: ParticipantId, reason: LeaveReason) -> Result<(), CoreError> {
        let participant = self
            .participants
            .remove(&id)
            .ok_or(CoreError::UnknownParticipant(id))?;
        self.demux.unregister(id, &participant.ufrag);
        self.out.timers.cancel(Timer::Rtc(id));
        self.out.timers.cancel(Timer::Allocate(id));
        let room = participant.room;
        for &mid in &participant.published {
            self.unpublish(
                room,
                TrackId {
                    participant: id,
                    mid,
                },
            );
        }
        for track in participant.outgoing.values() {
            if let Some(track) = self.tracks.get_mut(track) {
                track.legs.remove(&id);
            }
        }
        if let Some(entry) = self.rooms.get_mut(&room) {
            entry.members.retain(|member| *member != id);
            let cleared = entry.speakers.forget(id);
            if entry.members.is_empty() {
                self.rooms.remove(&room);
                self.out.timers.cancel(Timer::Speakers(room));
            } else if let Some(participant) = cleared {
                self.out
                    .events
                    .push_back(Event::ActiveSpeaker { room, participant });
            }
        }
        participant.close(&mut self.out);
        self.out.events.push_back(Event::Left {
            room,
            participant: id,
            reason,
        });
        Ok(())
    }
}
