//! Publishing, subscribing, forwarding and keyframe requests.

use std::time::Instant;

use str0m::format::{Codec, detect_av1_keyframe, detect_h264_keyframe, detect_h264_nalu};
use str0m::media::{KeyframeRequestKind, MediaKind, Mid, Rid, Rids};
use str0m::rtp::{ExtensionValues, RtpPacket, RtpWrite, Vp8Descriptor, Vp8Patch};

use super::error::CoreError;
use super::event::Event;
use super::forwarder::{DropReason, Incoming, LegState, Vp8Ids};
use super::ids::{ParticipantId, RoomId, TrackId};
use super::red::{self, Previous};
use super::speaker;
use super::timers::Timer;
use super::track::{Gate, Track};
use super::{Core, KeyframeReason};

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
        let rids = match participant.rtc.media(mid).map(|media| media.rids_rx()) {
            Some(Rids::Specific(rids)) => rids.clone(),
            _ => Vec::new(),
        };
        let room = participant.room;
        let waiting = participant.waiting;
        let track = TrackId {
            participant: id,
            mid,
        };
        self.tracks.insert(track, Track::new(kind, &rids));
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
        for layer in 0..track.layers.len() {
            if let Ok(layer) = u8::try_from(layer) {
                self.out.timers.cancel(Timer::Keyframe(id, layer));
            }
        }
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

    /// Writes one publisher packet of the layer `rid` to every leg of its track whose
    /// [`Forwarder`] forwards it. Its audio level, if any, counts towards the room's active
    /// speaker.
    ///
    /// [`Forwarder`]: super::forwarder::Forwarder
    pub(super) fn forward(
        &mut self,
        now: Instant,
        id: TrackId,
        rid: Option<Rid>,
        packet: &RtpPacket,
    ) {
        let Some(track) = self.tracks.get_mut(&id) else {
            return;
        };
        let Some(layer) = track.layer_of(rid) else {
            return;
        };
        let Some(entry) = track.layers.get_mut(usize::from(layer)) else {
            return;
        };
        let pt = packet.header.payload_type;
        let params = self.participants.get(&id.participant).and_then(|p| {
            p.rtc
                .codec_config()
                .find(|c| c.pt() == pt || c.red() == Some(pt))
                .copied()
        });
        // Audio arrives as plain Opus or as the publisher's RED (`Err` when that does not
        // parse); either way its primary block is what a subscriber without redundancy gets.
        let audio = params.filter(|_| !track.kind.is_video()).map(|params| {
            if params.pt() == pt {
                Ok(AudioIn {
                    red: false,
                    primary: &packet.payload,
                })
            } else {
                red::primary(&packet.payload)
                    .map(|primary| AudioIn { red: true, primary })
                    .ok_or(())
            }
        });
        // A publisher's RED counts as the Opus in it: that is what a subscriber gets unless
        // its own link wants redundancy, which the allocator adds for it.
        let len = match audio {
            Some(Ok(audio)) => audio.primary.len(),
            _ => packet.payload.len(),
        };
        entry.rate.add(packet.timestamp, len + RTP_HEADER_BYTES);
        if !entry.active {
            entry.active = true;
            self.reallocate_track(now, id);
        }
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
        // Every leg would drop it for the same reason: skip them and their subscribers.
        if track.muted || publisher.waiting {
            return;
        }
        let Some(params) = params else {
            return;
        };
        let audio = match audio {
            None if params.pt() != pt => return,
            None => None,
            Some(Ok(audio)) => Some(audio),
            Some(Err(())) => {
                self.counters.red_malformed += 1;
                return;
            }
        };
        let mut red_previous = track.red_previous.take();
        let mut red_wanted = false;
        let codec = params.spec().codec;
        // Only a simulcast track switches layers, so only its packets are inspected.
        let descriptor = (track.is_simulcast() && codec == Codec::Vp8)
            .then(|| Vp8Descriptor::parse(&packet.payload).ok())
            .flatten();
        let keyframe = track.is_simulcast() && starts_keyframe(codec, descriptor, &packet.payload);
        if keyframe
            && let Some(size) = descriptor.and_then(|d| vp8_keyframe_size(&d, &packet.payload))
            && let Some(entry) = track.layers.get_mut(usize::from(layer))
        {
            entry.size = Some(size);
        }
        let incoming = Incoming {
            pt: packet.header.payload_type,
            seq_no: packet.seq_no,
            timestamp: packet.header.timestamp,
            marker: packet.header.marker,
            muted: track.muted,
            waiting: publisher.waiting,
            layer,
            keyframe,
            arrival: packet.timestamp,
            clock_rate: params.spec().clock_rate.get(),
            vp8: descriptor.map(|d| Vp8Ids {
                picture_id: d
                    .picture_id()
                    .map(|id| (id, is_long_picture_id(&packet.payload))),
                tl0_pic_idx: d.tl0_pic_idx(),
                key_idx: d.key_idx(),
            }),
        };
        let nackable = track.kind.is_video();
        let ext_vals = ExtensionValues {
            audio_level: packet.header.ext_vals.audio_level,
            voice_activity: packet.header.ext_vals.voice_activity,
            video_orientation: packet.header.ext_vals.video_orientation,
            ..ExtensionValues::default()
        };
        let mut missed = None;
        for (subscriber_id, leg) in &mut track.legs {
            let Some(subscriber) = self.participants.get_mut(subscriber_id) else {
                continue;
            };
            let state = LegState {
                ready: leg.ready,
                connected: subscriber.receives_media(now),
            };
            let mid = leg.mid;
            let rtc = &subscriber.rtc;
            let before = leg.forwarder.current();
            let decision = leg.forwarder.forward(&incoming, state, || {
                let remote_pts = rtc.media(mid)?.remote_pts();
                let matched = rtc.codec_config().match_params(params)?.pt();
                remote_pts.contains(&matched).then_some(matched)
            });
            let out = match decision {
                Ok(out) => out,
                Err(DropReason::MissedKeyframe) => {
                    missed = leg.forwarder.target();
                    continue;
                }
                Err(_) => continue,
            };
            let (pt, payload) = match audio {
                None => (out.pt, packet.payload.clone()),
                Some(audio) => {
                    let red_pt = if subscriber.downlink.red.on() {
                        subscriber
                            .rtc
                            .codec_config()
                            .find(|p| p.pt() == out.pt)
                            .and_then(|p| p.red())
                    } else {
                        None
                    };
                    match (audio.red, red_pt) {
                        (false, None) => (out.pt, packet.payload.clone()),
                        (true, Some(red_pt)) if out.pt == params.pt() => {
                            (red_pt, packet.payload.clone())
                        }
                        (true, Some(red_pt)) => match red::renumber(&packet.payload, *out.pt) {
                            Some(payload) => (red_pt, payload.into()),
                            None => continue,
                        },
                        (true, None) => {
                            self.counters.red_cut += 1;
                            (out.pt, audio.primary.into())
                        }
                        (false, Some(red_pt)) => {
                            red_wanted = true;
                            self.counters.red_built += 1;
                            let red = red::wrap(
                                *out.pt,
                                audio.primary,
                                *packet.seq_no,
                                packet.header.timestamp,
                                red_previous.as_ref(),
                            );
                            (red_pt, red.into())
                        }
                    }
                }
            };
            let mut direct = subscriber.rtc.direct_api();
            let Some(stream) = direct.stream_tx_by_mid(mid, None) else {
                continue;
            };
            let mut write = RtpWrite::new(pt, out.seq_no, out.timestamp, packet.timestamp, payload)
                .marker(out.marker)
                .nackable(nackable)
                .ext_vals(ext_vals.clone());
            if let Some(patch) = descriptor
                .zip(out.vp8)
                .and_then(|(d, ids)| vp8_patch(&d, ids))
            {
                write = write.vp8_patch(patch);
            }
            stream.write_rtp(write);
            subscriber.drain(&mut self.out);
            self.counters.forwarded_packets += 1;
            if out.switched {
                if before.is_some_and(|from| from < layer) {
                    self.counters.layer_switches_up += 1;
                } else {
                    self.counters.layer_switches_down += 1;
                }
            }
        }
        if let Some(audio) = audio
            && red_wanted
        {
            // One buffer per track, refilled: no allocation per packet once it has grown.
            let previous = red_previous.get_or_insert_with(|| Previous {
                seq_no: 0,
                timestamp: 0,
                payload: Vec::new(),
            });
            previous.seq_no = *packet.seq_no;
            previous.timestamp = packet.header.timestamp;
            previous.payload.clear();
            previous.payload.extend_from_slice(audio.primary);
        }
        if let Some(track) = self.tracks.get_mut(&id) {
            track.red_previous = red_previous.filter(|_| red_wanted);
        }
        if let Some(layer) = missed {
            self.request_layer_keyframe(
                now,
                id,
                layer,
                KeyframeRequestKind::Pli,
                KeyframeReason::MissedKeyframe,
            );
        }
    }

    /// The publisher stopped (or resumed) sending the layer `rid` of a track.
    pub(super) fn layer_paused(
        &mut self,
        now: Instant,
        id: TrackId,
        rid: Option<Rid>,
        paused: bool,
    ) {
        let Some(track) = self.tracks.get_mut(&id) else {
            return;
        };
        let Some(layer) = track
            .layer_of(rid)
            .and_then(|layer| track.layers.get_mut(usize::from(layer)))
        else {
            return;
        };
        if layer.active == paused {
            layer.active = !paused;
            self.reallocate_track(now, id);
        }
    }

    /// `subscriber` (or the core, for its new leg) wants a keyframe on `id`: of the layer its
    /// leg forwards or switches to.
    pub(super) fn request_keyframe(
        &mut self,
        now: Instant,
        id: TrackId,
        subscriber: ParticipantId,
        kind: KeyframeRequestKind,
        reason: KeyframeReason,
    ) {
        let Some(layer) = self
            .tracks
            .get(&id)
            .and_then(|track| track.legs.get(&subscriber))
            .and_then(|leg| leg.forwarder.target())
        else {
            return;
        };
        self.request_layer_keyframe(now, id, layer, kind, reason);
    }

    /// Asks for a keyframe of every layer some leg of `id` forwards or switches to (after an
    /// unmute, every subscriber needs one).
    pub(super) fn request_keyframes(
        &mut self,
        now: Instant,
        id: TrackId,
        kind: KeyframeRequestKind,
        reason: KeyframeReason,
    ) {
        let Some(track) = self.tracks.get(&id) else {
            return;
        };
        let mut wanted = 0u64;
        for layer in track.legs.values().filter_map(|leg| leg.forwarder.target()) {
            wanted |= 1 << (layer % 64);
        }
        for layer in 0..track.layers.len().min(64) {
            if wanted & (1 << layer) != 0
                && let Ok(layer) = u8::try_from(layer)
            {
                self.request_layer_keyframe(now, id, layer, kind, reason);
            }
        }
    }

    /// Asks the publisher of `id` for a keyframe of `layer`, through that layer's throttle.
    pub(super) fn request_layer_keyframe(
        &mut self,
        now: Instant,
        id: TrackId,
        layer: u8,
        kind: KeyframeRequestKind,
        reason: KeyframeReason,
    ) {
        let interval = self.config.keyframe_interval;
        let Some(track) = self.tracks.get_mut(&id) else {
            return;
        };
        if !track.kind.is_video() {
            return;
        }
        self.counters.keyframe_reasons.count(reason);
        let Some(entry) = track.layers.get_mut(usize::from(layer)) else {
            return;
        };
        match entry.keyframes.request(now, kind, interval) {
            Gate::Send => self.send_keyframe_request(id, layer, kind),
            Gate::DeferUntil(at) => {
                self.counters.keyframe_requests_throttled += 1;
                self.out.timers.set(Timer::Keyframe(id, layer), at);
            }
            Gate::Coalesced => self.counters.keyframe_requests_throttled += 1,
        }
    }

    pub(super) fn send_deferred_keyframe(&mut self, now: Instant, id: TrackId, layer: u8) {
        let deferred = self
            .tracks
            .get_mut(&id)
            .and_then(|track| track.layers.get_mut(usize::from(layer)))
            .and_then(|layer| layer.keyframes.take_deferred(now));
        if let Some(kind) = deferred {
            self.send_keyframe_request(id, layer, kind);
        }
    }

    /// Sends a keyframe request for one layer. The layer's stream is named by its rid:
    /// without one, str0m would pick any layer of the m-line.
    fn send_keyframe_request(&mut self, id: TrackId, layer: u8, kind: KeyframeRequestKind) {
        let Some(rid) = self
            .tracks
            .get(&id)
            .and_then(|track| track.layers.get(usize::from(layer)))
            .map(|layer| layer.rid)
        else {
            return;
        };
        let Some(publisher) = self.participants.get_mut(&id.participant) else {
            return;
        };
        let mut direct = publisher.rtc.direct_api();
        let Some(stream) = direct.stream_rx_by_mid(id.mid, rid) else {
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

/// Whether `payload` (of `codec`) starts a keyframe, where a subscriber can switch to its
/// layer. H.264 switches at the SPS, which Chrome sends just before the IDR slice; switching
/// at the IDR would lose the parameter sets.
fn starts_keyframe(codec: Codec, vp8: Option<Vp8Descriptor>, payload: &[u8]) -> bool {
    match codec {
        Codec::Vp8 => vp8.is_some_and(|d| d.starts_keyframe(payload)),
        Codec::H264 => detect_h264_nalu(payload, 7) || detect_h264_keyframe(payload),
        // The B (beginning of frame) and not-P bits of the VP9 descriptor.
        Codec::Vp9 => payload.first().is_some_and(|b| b & 0x48 == 0x08),
        Codec::Av1 => detect_av1_keyframe(payload),
        _ => false,
    }
}

/// An audio packet as it came: plain Opus or the publisher's RED, and the Opus in it.
#[derive(Clone, Copy)]
struct AudioIn<'a> {
    red: bool,
    primary: &'a [u8],
}

/// Bytes of an RTP header without extensions, counted with each payload in a layer's rate.
const RTP_HEADER_BYTES: usize = 12;

/// The width and height a VP8 keyframe codes (RFC 6386 §9.1: after the 3-byte frame tag, the
/// start code `9d 01 2a`, then 14-bit width and height, little-endian, each with 2 scaling
/// bits), from the first packet of the frame.
fn vp8_keyframe_size(descriptor: &Vp8Descriptor, payload: &[u8]) -> Option<(u16, u16)> {
    let offset = vp8_descriptor_len(payload)?;
    let header = payload.get(offset..offset + 10)?;
    if !descriptor.starts_keyframe(payload) || header[3..6] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let width = u16::from_le_bytes([header[6], header[7]]) & 0x3fff;
    let height = u16::from_le_bytes([header[8], header[9]]) & 0x3fff;
    (width > 0 && height > 0).then_some((width, height))
}

/// The length of the VP8 payload descriptor at the start of `payload` (RFC 7741 §4.2).
fn vp8_descriptor_len(payload: &[u8]) -> Option<usize> {
    let first = *payload.first()?;
    if first & 0x80 == 0 {
        return Some(1);
    }
    let extension = *payload.get(1)?;
    let mut len = 2;
    if extension & 0x80 != 0 {
        len += if payload.get(len)? & 0x80 != 0 { 2 } else { 1 };
    }
    if extension & 0x40 != 0 {
        len += 1;
    }
    if extension & 0x30 != 0 {
        len += 1;
    }
    Some(len)
}

/// Whether the VP8 descriptor's PictureID is the 15-bit form (its M bit), for a descriptor
/// known to carry one: byte 0 has X, byte 1 has I, so the PictureID starts at byte 2.
fn is_long_picture_id(payload: &[u8]) -> bool {
    payload.get(2).is_some_and(|b| b & 0x80 != 0)
}

/// The patch that writes `ids` into a copy of the payload `descriptor` was parsed from; `None`
/// when they do not fit it (not expected: the fields come from the same descriptor).
fn vp8_patch(descriptor: &Vp8Descriptor, ids: Vp8Ids) -> Option<Vp8Patch> {
    let mut patch = descriptor.patch();
    if let Some((id, _)) = ids.picture_id {
        patch = patch.picture_id(id);
    }
    if let Some(tl0) = ids.tl0_pic_idx {
        patch = patch.tl0_pic_idx(tl0);
    }
    if let Some(key_idx) = ids.key_idx {
        patch = patch.key_idx(key_idx);
    }
    patch.build().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vp8_keyframe_tells_its_size() {
        // Descriptor: X, then I + L + T/K with a 15-bit picture id; then the frame tag of a
        // keyframe, the start code and 1280 x 720 with scaling bits set.
        let mut payload = vec![0x90, 0xf0, 0x81, 0x23, 0x05, 0x21];
        payload.extend([0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a]);
        payload.extend((1280u16 | 0x4000).to_le_bytes());
        payload.extend((720u16 | 0x8000).to_le_bytes());
        payload.extend([0; 20]);
        let descriptor = Vp8Descriptor::parse(&payload).expect("descriptor");
        assert_eq!(vp8_descriptor_len(&payload), Some(6));
        assert_eq!(vp8_keyframe_size(&descriptor, &payload), Some((1280, 720)));
        // A delta frame (P bit set) or a short packet has none.
        let mut delta = payload.clone();
        delta[6] |= 0x01;
        let descriptor = Vp8Descriptor::parse(&delta).expect("descriptor");
        assert_eq!(vp8_keyframe_size(&descriptor, &delta), None);
        assert_eq!(vp8_keyframe_size(&descriptor, &payload[..12]), None);
        // Without the extension byte the descriptor is one byte.
        assert_eq!(vp8_descriptor_len(&[0x10, 0x00]), Some(1));
    }
}
