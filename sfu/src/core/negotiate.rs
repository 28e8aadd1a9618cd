//! SDP offer/answer in both directions. The server is the impolite peer: it never rolls back,
//! and a client offer that collides with a pending server offer is refused.

use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpOffer};
use str0m::media::{Direction, KeyframeRequestKind, MediaKind, Mid};
use str0m::rtp::Ssrc;
use str0m::{Rtc, RtcError};

use super::error::CoreError;
use super::event::Event;
use super::ids::{ParticipantId, TrackId};
use super::outputs::Work;
use super::track::Leg;
use super::{Core, KeyframeReason};

/// How long a video leg's sent packets are kept for retransmission. str0m keeps 3 s, which
/// at 360p is about 200 KiB per leg, most of a visit's memory; a browser asks again within
/// a round trip or two and gives a packet up after about a second (libwebrtc keeps its own
/// for the larger of 1 s and three round trips).
const RTX_AGE: Duration = Duration::from_secs(1);
/// At most this many of them (str0m's default; at 1 s only 1080p simulcast comes near it).
const RTX_PACKETS: usize = 1000;
/// When retransmissions exceed this share of what a leg sends, str0m drops queued ones
/// (str0m's default).
const RTX_RATIO_CAP: f32 = 0.15;

impl Core {
    /// Sends `id` an offer with its queued changes, unless one is already outstanding.
    pub(super) fn negotiate(&mut self, id: ParticipantId) {
        let Some(participant) = self.participants.get_mut(&id) else {
            return;
        };
        let negotiation = &mut participant.negotiation;
        if negotiation.pending.is_some() || !negotiation.has_changes() {
            return;
        }
        let adds = std::mem::take(&mut negotiation.add);
        let stops = std::mem::take(&mut negotiation.stop);
        let recv_lines = std::mem::take(&mut negotiation.recv_lines);
        // A line already in the queued direction (a client's offer got there first) needs
        // no offer: a resumed one is ready now, on the send stream that answer made.
        let mut directions = Vec::new();
        let mut resumed = Vec::new();
        let mut streams = Vec::new();
        for (mid, direction) in std::mem::take(&mut negotiation.directions) {
            let Some(current) = participant.rtc.media(mid).map(|m| m.direction()) else {
                continue;
            };
            if current != direction {
                if direction.is_sending()
                    && let Some(ssrcs) =
                        fresh_stream(&mut participant.rtc, mid, &mut participant.retired)
                {
                    streams.push((mid, ssrcs));
                }
                directions.push((mid, direction));
            } else if direction.is_sending() {
                resumed.extend(participant.outgoing.get(&mid).copied());
            }
        }
        let mut offered_send = Vec::new();
        let mut offered_recv = Vec::new();
        let mut api = participant.rtc.sdp_api();
        for mid in stops {
            api.stop_media(mid);
        }
        for (mid, direction) in &directions {
            api.set_direction(*mid, *direction);
        }
        for track_id in adds {
            let Some(track) = self.tracks.get_mut(&track_id) else {
                continue;
            };
            if track.legs.contains_key(&id) {
                continue;
            }
            let mid = api.add_media(
                track.kind,
                Direction::SendOnly,
                Some(track_id.participant.to_string()),
                Some(track_id.to_string()),
                None,
            );
            track.legs.insert(id, Leg::new(mid, track.best_layer()));
            participant.outgoing.insert(mid, track_id);
            offered_send.push(mid);
            self.out.events.push_back(Event::TrackRouted {
                subscriber: id,
                track: track_id,
                mid,
            });
        }
        if recv_lines {
            for kind in [MediaKind::Audio, MediaKind::Video] {
                offered_recv.push(api.add_media(kind, Direction::RecvOnly, None, None, None));
            }
        }
        let offer = api.apply();
        // The offer names the resumed lines' new streams; they are declared for good only
        // with the answer (`accept_answer`): str0m pads and probes on a new stream at once,
        // and what reaches the subscriber before it knows the SSRCs is lost to the estimate.
        let mut direct = participant.rtc.direct_api();
        for (_, (ssrc, _)) in &streams {
            direct.remove_stream_tx(*ssrc);
        }
        if let Some((offer, pending)) = offer {
            let negotiation = &mut participant.negotiation;
            negotiation.pending = Some(pending);
            negotiation.offered_streams = streams;
            negotiation.offered_send = offered_send;
            negotiation.offered_recv = offered_recv;
            negotiation.offered_directions = directions;
            self.out.events.push_back(Event::Offer {
                participant: id,
                offer,
            });
        }
        participant.drain(&mut self.out);
        self.ready_resumed(id, &resumed);
    }

    /// Marks `subscriber`'s resumed legs of `tracks` ready, their m-lines sending again on
    /// SSRCs the subscriber knows, and tells it. Each waits for a keyframe of its layer, which
    /// the resume asked for, the answer asks for again (`accept_answer`), and so does
    /// `chase_switches` after that.
    fn ready_resumed(&mut self, subscriber: ParticipantId, tracks: &[TrackId]) {
        for &track in tracks {
            if let Some(leg) = self
                .tracks
                .get_mut(&track)
                .and_then(|t| t.legs.get_mut(&subscriber))
            {
                leg.ready = true;
                // Paused again meanwhile: the subscriber was never told it resumed.
                if leg.forwarder.target().is_none() {
                    continue;
                }
                self.out
                    .events
                    .push_back(Event::TrackResumed { subscriber, track });
            }
        }
    }

    pub(super) fn accept_offer(
        &mut self,
        now: Instant,
        id: ParticipantId,
        offer: SdpOffer,
    ) -> Result<(), CoreError> {
        let participant = self
            .participants
            .get_mut(&id)
            .ok_or(CoreError::UnknownParticipant(id))?;
        if participant.negotiation.pending.is_some() {
            return Err(CoreError::OfferCollision(id));
        }
        let offer = publishing_only(offer, |mid| participant.outgoing.contains_key(&mid))?;
        let answer = participant.rtc.sdp_api().accept_offer(offer);
        participant.drain(&mut self.out);
        let answer = answer?;
        // An offer with new ICE credentials is an ICE restart (the client changed networks):
        // str0m answers with new local credentials, and the client's checks from its new
        // address will name the new ufrag, so the demultiplexer must know it.
        let ufrag = participant.rtc.direct_api().local_ice_credentials().ufrag;
        if ufrag != participant.ufrag {
            let old = std::mem::replace(&mut participant.ufrag, ufrag.clone());
            self.demux.rekey(id, &old, ufrag);
        }
        self.out.events.push_back(Event::Answer {
            participant: id,
            answer,
        });
        self.run(now);
        self.negotiate(id);
        Ok(())
    }

    pub(super) fn accept_answer(
        &mut self,
        now: Instant,
        id: ParticipantId,
        answer: SdpAnswer,
    ) -> Result<(), CoreError> {
        let participant = self
            .participants
            .get_mut(&id)
            .ok_or(CoreError::UnknownParticipant(id))?;
        let negotiation = &mut participant.negotiation;
        let pending = negotiation
            .pending
            .take()
            .ok_or(CoreError::NoPendingOffer(id))?;
        let offered_send = std::mem::take(&mut negotiation.offered_send);
        let offered_recv = std::mem::take(&mut negotiation.offered_recv);
        let offered_directions = std::mem::take(&mut negotiation.offered_directions);
        let offered_streams = std::mem::take(&mut negotiation.offered_streams);
        // Before str0m applies the answer, or it would make streams of its own for the lines
        // the offer sends on again, on SSRCs the subscriber was never told.
        for (mid, ssrcs) in &offered_streams {
            declare(&mut participant.rtc, *mid, *ssrcs);
        }
        let result = participant.rtc.sdp_api().accept_answer(pending, answer);
        participant.drain(&mut self.out);
        let mut ready = Vec::new();
        let mut failed = Vec::new();
        let mut resumed = Vec::new();
        if result.is_ok() {
            resumed.extend(
                offered_directions
                    .iter()
                    .filter(|(_, direction)| direction.is_sending())
                    .filter_map(|(mid, _)| participant.outgoing.get(mid).copied()),
            );
            ready.extend(
                offered_send
                    .iter()
                    .filter_map(|mid| participant.outgoing.get(mid).copied()),
            );
            for mid in &offered_send {
                let video = participant
                    .rtc
                    .media(*mid)
                    .is_some_and(|media| media.kind().is_video());
                if !video {
                    continue;
                }
                let mut direct = participant.rtc.direct_api();
                if let Some(stream) = direct.stream_tx_by_mid(*mid, None) {
                    stream.set_rtx_cache(RTX_PACKETS, RTX_AGE, Some(RTX_RATIO_CAP));
                }
            }
            for mid in offered_recv {
                if let Some(media) = participant.rtc.media(mid)
                    && media.direction().is_receiving()
                {
                    self.out.work.push_back(Work::Publish {
                        participant: id,
                        mid,
                        kind: media.kind(),
                    });
                }
            }
        } else {
            // str0m dropped the offer's changes, so its m-lines never existed: forget their
            // legs and queue everything again for a fresh offer.
            failed.extend(
                offered_send
                    .iter()
                    .filter_map(|mid| participant.outgoing.remove(mid)),
            );
            participant.negotiation.add.extend(&failed);
            participant.negotiation.recv_lines |= !offered_recv.is_empty();
            for (mid, direction) in offered_directions {
                if !participant
                    .negotiation
                    .directions
                    .iter()
                    .any(|(m, _)| *m == mid)
                {
                    participant.negotiation.set_direction(mid, direction);
                }
            }
        }
        // A line paused again while its resume was being answered, or whose offer failed,
        // sends nothing until its next offer.
        for (mid, _) in &offered_streams {
            if result.is_err() || participant.negotiation.queued(*mid, Direction::Inactive) {
                stand_down(&mut participant.rtc, *mid, &mut participant.retired);
            }
        }
        self.ready_resumed(id, &resumed);
        for track in resumed {
            if let Some(layer) = self
                .tracks
                .get(&track)
                .and_then(|t| t.legs.get(&id))
                .and_then(|leg| leg.forwarder.target())
            {
                self.request_switch_keyframe(now, track, layer);
            }
        }
        for track in &ready {
            if let Some(leg) = self
                .tracks
                .get_mut(track)
                .and_then(|track| track.legs.get_mut(&id))
            {
                leg.ready = true;
            }
        }
        for track in &failed {
            if let Some(track) = self.tracks.get_mut(track) {
                track.legs.remove(&id);
            }
        }
        // A new subscriber sees nothing until the next keyframe; ask for one now.
        for track in ready {
            self.request_keyframe(
                now,
                track,
                id,
                KeyframeRequestKind::Pli,
                KeyframeReason::NewSubscriber,
            );
        }
        self.run(now);
        self.negotiate(id);
        Ok(result?)
    }
}

/// Reads every `sendrecv` m-line of a client's offer that the server does not send on as
/// `sendonly`, so that str0m answers it (and offers it later) `recvonly`.
///
/// The server sends each subscription on an m-line of its own and never on the client's
/// publishing lines. Answering those `sendrecv`, as str0m would, makes browsers show a remote
/// track that never gets a frame. Lines the server already sends on (`outgoing`) keep their
/// direction. str0m's SDP types are read-only, hence the round trip through the text, which
/// str0m itself wrote and so has one attribute per line.
pub(super) fn publishing_only(
    offer: SdpOffer,
    outgoing: impl Fn(Mid) -> bool,
) -> Result<SdpOffer, CoreError> {
    let text = offer.to_sdp_string();
    if !text.contains("a=sendrecv") {
        return Ok(offer);
    }
    let mut sections: Vec<Vec<&str>> = Vec::new();
    let mut section = Vec::new();
    for line in text.lines() {
        if line.starts_with("m=") {
            sections.push(std::mem::take(&mut section));
        }
        section.push(line);
    }
    sections.push(section);
    let mut rewritten = String::with_capacity(text.len());
    for (index, section) in sections.iter().enumerate() {
        let mid = section
            .iter()
            .find_map(|line| line.strip_prefix("a=mid:"))
            .map(Mid::from);
        let publishing = index > 0 && !mid.is_some_and(&outgoing);
        for line in section {
            let line = if publishing && *line == "a=sendrecv" {
                "a=sendonly"
            } else {
                line
            };
            rewritten.push_str(line);
            rewritten.push_str("\r\n");
        }
    }
    SdpOffer::from_sdp_string(&rewritten).map_err(|e| CoreError::Rtc(RtcError::Sdp(e)))
}

/// Removes the send streams of the paused video m-line `mid`, so that str0m pads nothing on
/// them: str0m 0.25 keeps up to 50 kbit/s of padding (on the RTX SSRC of any send stream that
/// has one) for as long as anything is sent, and on a link too weak for video that padding is
/// what the audio is lost to. The offer that follows makes the m-line `inactive`.
pub(super) fn stand_down(rtc: &mut Rtc, mid: Mid, retired: &mut Vec<Ssrc>) {
    let mut direct = rtc.direct_api();
    while let Some((ssrc, rtx)) = direct
        .stream_tx_by_mid(mid, None)
        .map(|s| (s.ssrc(), s.rtx()))
    {
        direct.remove_stream_tx(ssrc);
        for ssrc in [Some(ssrc), rtx].into_iter().flatten() {
            if !retired.contains(&ssrc) {
                retired.push(ssrc);
            }
        }
    }
}

/// Declares a send stream for the resumed video m-line `mid` on SSRCs it never used, for the
/// offer that makes the line `sendonly` again to name, and returns them. Never the old ones: a
/// stream declared again on its old RTX SSRC restarts that SSRC's sequence numbers, so the
/// browser's SRTP would take its packets for replays (and the keystream would repeat).
pub(super) fn fresh_stream(
    rtc: &mut Rtc,
    mid: Mid,
    retired: &mut Vec<Ssrc>,
) -> Option<(Ssrc, Ssrc)> {
    if rtc.media(mid).is_none_or(|m| !m.kind().is_video()) {
        return None;
    }
    let direct = rtc.direct_api();
    let mut fresh = || loop {
        let ssrc = direct.new_ssrc();
        if !retired.contains(&ssrc) {
            retired.push(ssrc);
            break ssrc;
        }
    };
    let ssrcs = (fresh(), fresh());
    declare(rtc, mid, ssrcs).then_some(ssrcs)
}

/// Declares `mid`'s video send stream on `(ssrc, rtx)`, unless the line is gone or already has
/// one; says whether it did.
fn declare(rtc: &mut Rtc, mid: Mid, (ssrc, rtx): (Ssrc, Ssrc)) -> bool {
    if rtc.media(mid).is_none() {
        return false;
    }
    let mut direct = rtc.direct_api();
    if direct.stream_tx_by_mid(mid, None).is_some() {
        return false;
    }
    direct
        .declare_stream_tx(ssrc, Some(rtx), mid, None)
        .set_rtx_cache(RTX_PACKETS, RTX_AGE, Some(RTX_RATIO_CAP));
    true
}
