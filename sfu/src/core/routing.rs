//! Publishing, subscribing, forwarding and keyframe requests.

use std::time::Instant;

use str0m::media::{KeyframeRequestKind, MediaKind, Mid};
use str0m::rtp::{ExtensionValues, RtpPacket, RtpWrite};

use super::Core;
use super::error::CoreError;
use super::event::Event;
use super::forwarder::{Incoming, LegState};
use super::ids::{ParticipantId, RoomId, TrackId};
use super::speaker;
use super::timers::Timer;
use super::track::{Gate, Track};

impl Core {
    /// A participant started sending on an m-line: make it a track and route it to the room.
    pub(super) fn publish(&mut self, id: ParticipantId, mid: Mid, kind: MediaKind) {
        let max = self.config.max_tracks_per_participant;
        let Some(participant) = self.participants.get_mut(&id) else {
            return;
        };
        if participant.published.contains(&mid) {
            return;
        }
        if participant.published.len() >= max {
            self.out.events.push_back(Event::TrackRefused {
                participant: id,
                mid,
                reason: CoreError::TooManyTracks {
                    participant: id,
                    max,
                },
            });
            return;
        }
        participant.published.push(mid);
        let room = participant.room;
        let waiting = participant.waiting;
        let track = TrackId {
            participant: id,
            mid,
        };
        self.tracks.insert(track, Track::new(kind));
        self.out
            .events
            .push_back(Event::TrackPublished { room, track, kind });
        if !waiting {
            self.subscribe_room_to(track);
        }
    }

    /// A track is gone: stop its m-line at every subscriber and forget it.
    pub(super) fn unpublish(&mut self, room: RoomId, id: TrackId) {
        let Some(track) = self.tracks.remove(&id) else {
            return;
        };
        self.out.timers.cancel(Timer::Keyframe(id));
        if let Some(publisher) = self.participants.get_mut(&id.participant) {
            publisher.published.retain(|mid| *mid != id.mid);
        }
        let members = self.members(room);
        for member in &members {
            if let Some(subscriber) = self.participants.get_mut(member) {
                subscriber.negotiation.add.retain(|queued| *queued != id);
            }
        }
        for (subscriber_id, leg) in track.legs {
            if let Some(subscriber) = self.participants.get_mut(&subscriber_id) {
                subscriber.outgoing.remove(&leg.mid);
                subscriber.negotiation.stop.push(leg.mid);
            }
            self.negotiate(subscriber_id);
        }
        self.out
            .events
            .push_back(Event::TrackUnpublished { room, track: id });
    }

    /// Queues every track of the other admitted members of `id`'s room for `id`.
    pub(super) fn subscribe_to_room(&mut self, id: ParticipantId) {
        let Some(room) = self.participants.get(&id).map(|p| p.room) else {
            return;
        };
        let mut tracks = Vec::new();
        for member in self.members(room) {
            match self.participants.get(&member) {
                Some(publisher) if member != id && !publisher.waiting => {
                    tracks.extend(publisher.published.iter().map(|&mid| TrackId {
                        participant: member,
                        mid,
                    }));
                }
                _ => {}
            }
        }
        if let Some(subscriber) = self.participants.get_mut(&id) {
            subscriber.negotiation.add.extend(tracks);
        }
        self.negotiate(id);
    }

    /// Queues `track` for every other admitted member of its publisher's room.
    pub(super) fn subscribe_room_to(&mut self, track: TrackId) {
        let Some(room) = self.participants.get(&track.participant).map(|p| p.room) else {
            return;
        };
        for member in self.members(room) {
            if member == track.participant {
                continue;
            }
            let Some(subscriber) = self.participants.get_mut(&member) else {
                continue;
            };
            if subscriber.waiting {
                continue;
            }
            subscriber.negotiation.add.push(track);
            self.negotiate(member);
        }
    }

    fn members(&self, room: RoomId) -> Vec<ParticipantId> {
        self.rooms
            .get(&room)
            .map(|r| r.members.clone())
            .unwrap_or_default()
    }

    /// Writes one publisher packet to every leg of its track whose [`Forwarder`] forwards it.
    ///
    /// [`Forwarder`]: super::forwarder::Forwarder
    /// Its audio level, if any, counts towards the room's active speaker.
    pub(super) fn forward(&mut self, now: Instant, id: TrackId, packet: &RtpPacket) {
        let Some(track) = self.tracks.get_mut(&id) else {
            return;
        };
        if track.legs.is_empty() {
            return;
        }
        let Some(publisher) = self.participants.get(&id.participant) else {
            return;
        };
        if !track.kind.is_video()
            && !track.muted
            && !publisher.waiting
            && let Some(dbov) = packet.header.ext_vals.audio_level
            && let Some(room) = self.rooms.get_mut(&publisher.room)
            && room.speakers.observe(id.participant, dbov)
        {
            self.out
                .timers
                .set(Timer::Speakers(publisher.room), now + speaker::WINDOW);
        }
        let incoming = Incoming {
            pt: packet.header.payload_type,
            seq_no: packet.seq_no,
            timestamp: packet.header.timestamp,
            marker: packet.header.marker,
            muted: track.muted,
            waiting: publisher.waiting,
        };
        // Every leg would drop it for the same reason: skip them and their subscribers.
        if incoming.check().is_err() {
            return;
        }
        let Some(params) = publisher
            .rtc
            .codec_config()
            .find(|p| p.pt() == incoming.pt)
            .copied()
        else {
            return;
        };
        let nackable = track.kind.is_video();
        let ext_vals = ExtensionValues {
            audio_level: packet.header.ext_vals.audio_level,
            voice_activity: packet.header.ext_vals.voice_activity,
            video_orientation: packet.header.ext_vals.video_orientation,
            ..ExtensionValues::default()
        };
        for (subscriber_id, leg) in &mut track.legs {
            let Some(subscriber) = self.participants.get_mut(subscriber_id) else {
                continue;
            };
            let state = LegState {
                ready: leg.ready,
                connected: subscriber.rtc.is_connected(),
            };
            let mid = leg.mid;
            let rtc = &subscriber.rtc;
            let decision = leg.forwarder.forward(&incoming, state, || {
                let remote_pts = rtc.media(mid)?.remote_pts();
                let matched = rtc.codec_config().match_params(params)?.pt();
                remote_pts.contains(&matched).then_some(matched)
            });
            let Ok(out) = decision else {
                continue;
            };
            let mut direct = subscriber.rtc.direct_api();
            let Some(stream) = direct.stream_tx_by_mid(mid, None) else {
                continue;
            };
            stream.write_rtp(
                RtpWrite::new(
                    out.pt,
                    out.seq_no,
                    out.timestamp,
                    packet.timestamp,
                    packet.payload.clone(),
                )
                .marker(out.marker)
                .nackable(nackable)
                .ext_vals(ext_vals.clone()),
            );
            subscriber.drain(&mut self.out);
            self.counters.forwarded_packets += 1;
        }
    }

    /// A subscriber (or the core, for a new leg) wants a keyframe on `id`.
    pub(super) fn request_keyframe(
        &mut self,
        now: Instant,
        id: TrackId,
        kind: KeyframeRequestKind,
    ) {
        let interval = self.config.keyframe_interval;
        let Some(track) = self.tracks.get_mut(&id) else {
            return;
        };
        if !track.kind.is_video() {
            return;
        }
        match track.keyframes.request(now, kind, interval) {
            Gate::Send => self.send_keyframe_request(id, kind),
            Gate::DeferUntil(at) => {
                self.counters.keyframe_requests_throttled += 1;
                self.out.timers.set(Timer::Keyframe(id), at);
            }
            Gate::Coalesced => self.counters.keyframe_requests_throttled += 1,
        }
    }

    pub(super) fn send_deferred_keyframe(&mut self, now: Instant, id: TrackId) {
        let deferred = self
            .tracks
            .get_mut(&id)
            .and_then(|track| track.keyframes.take_deferred(now));
        if let Some(kind) = deferred {
            self.send_keyframe_request(id, kind);
        }
    }

    fn send_keyframe_request(&mut self, id: TrackId, kind: KeyframeRequestKind) {
        let Some(publisher) = self.participants.get_mut(&id.participant) else {
            return;
        };
        let mut direct = publisher.rtc.direct_api();
        let Some(stream) = direct.stream_rx_by_mid(id.mid, None) else {
            return;
        };
        stream.request_keyframe(kind);
        publisher.drain(&mut self.out);
        self.counters.keyframe_requests_sent += 1;
        self.out
            .events
            .push_back(Event::KeyframeRequested { track: id, kind });
    }

    /// [`Core::unpublish`] for a track whose publisher is still in its room.
    pub(super) fn unpublish_live(&mut self, track: TrackId) {
        if let Some(room) = self.participants.get(&track.participant).map(|p| p.room) {
            self.unpublish(room, track);
        }
    }

    /// The end of `room`'s active-speaker window: reports a change and collects another
    /// window while there is audio or a speaker to clear.
    pub(super) fn decide_speaker(&mut self, now: Instant, room: RoomId) {
        let Some(entry) = self.rooms.get_mut(&room) else {
            return;
        };
        let decision = entry.speakers.decide();
        if decision.again {
            self.out
                .timers
                .set(Timer::Speakers(room), now + speaker::WINDOW);
        }
        if let Some(participant) = decision.changed {
            self.out
                .events
                .push_back(Event::ActiveSpeaker { room, participant });
        }
    }
}
