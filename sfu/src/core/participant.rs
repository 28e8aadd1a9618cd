use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::bwe::{Bitrate, BweKind};
use str0m::change::SdpPendingOffer;
use str0m::crypto::CryptoProvider;
use str0m::media::{Direction, Mid};
use str0m::net::TcpType;
use str0m::rtp::Ssrc;
use str0m::{Candidate, Event as RtcEvent, IceConnectionState, IceCreds, Output, Rtc};

use super::config::Config;
use super::downlink::Downlink;
use super::error::CoreError;
use super::event::{Event, Transmit};
use super::ids::{ParticipantId, RoomId, TrackId, Transport};
use super::outputs::{Outputs, Work};
use super::quality::QualityMeter;
use super::timers::Timer;

/// Upper bound on datagrams flushed from a closing `Rtc` (RTCP BYE, DTLS close_notify); the
/// bound only guards against a misbehaving session, a clean close needs a handful.
const CLOSE_FLUSH_LIMIT: usize = 64;

/// How long after its session connects a participant that has sent no media yet is trusted to
/// hold the SRTP keys. str0m's DTLS server is done once it has sent its final flight; if that
/// flight is lost the client retransmits its own (after about a second) to get it again, and
/// media forwarded meanwhile only fills a weak link and crowds out the retransmission.
const KEYS_GRACE: Duration = Duration::from_secs(3);

/// One participant: its WebRTC session with the SFU and its negotiation state.
pub(crate) struct Participant {
    pub(crate) id: ParticipantId,
    pub(crate) room: RoomId,
    pub(crate) rtc: Rtc,
    pub(crate) ufrag: String,
    pub(crate) waiting: bool,
    /// The m-lines on which this participant publishes, in publishing order.
    pub(crate) published: Vec<Mid>,
    /// Send-only m-lines in this participant's session and the track each one carries.
    pub(crate) outgoing: HashMap<Mid, TrackId>,
    pub(crate) negotiation: Negotiation,
    /// The SSRCs of send streams removed when their legs paused, and those chosen for their
    /// resumes: never chosen again in this session (up to four per pause and resume).
    pub(crate) retired: Vec<Ssrc>,
    /// Cumulative (NACK, PLI) counts str0m last reported per send m-line; reports carry
    /// totals, the core counts increments.
    feedback: HashMap<Mid, (u64, u64)>,
    /// Whether an RTP packet from this participant has arrived yet.
    media_seen: bool,
    /// When the core first found this participant's session connected.
    connected_at: Option<Instant>,
    /// Its connection quality, from its session's statistics.
    quality: QualityMeter,
    /// Its link as a subscriber: the bandwidth estimate and the layer decisions.
    pub(crate) downlink: Downlink,
}

/// Server-initiated SDP renegotiation. Only one offer is outstanding at a time; changes that
/// arrive meanwhile are queued for the next one.
#[derive(Default)]
pub(crate) struct Negotiation {
    pub(crate) pending: Option<SdpPendingOffer>,
    /// Send-only m-lines in the pending offer.
    pub(crate) offered_send: Vec<Mid>,
    /// Receive-only m-lines in the pending offer, for a client that joined without an offer.
    pub(crate) offered_recv: Vec<Mid>,
    /// Send-only m-lines whose direction the pending offer changes, and to what.
    pub(crate) offered_directions: Vec<(Mid, Direction)>,
    /// The send streams (SSRC, RTX SSRC) the pending offer names for lines it sends on again,
    /// declared when it is answered.
    pub(crate) offered_streams: Vec<(Mid, (Ssrc, Ssrc))>,
    pub(crate) add: Vec<TrackId>,
    pub(crate) stop: Vec<Mid>,
    pub(crate) recv_lines: bool,
    /// The direction each paused or resumed video m-line must take, the latest per m-line.
    pub(crate) directions: Vec<(Mid, Direction)>,
}

impl Negotiation {
    pub(crate) fn has_changes(&self) -> bool {
        !self.add.is_empty()
            || !self.stop.is_empty()
            || self.recv_lines
            || !self.directions.is_empty()
    }

    /// Queues `mid` to take `direction` in the next offer, replacing what was queued for it.
    pub(crate) fn set_direction(&mut self, mid: Mid, direction: Direction) {
        self.directions.retain(|(queued, _)| *queued != mid);
        self.directions.push((mid, direction));
    }

    /// Whether `mid` was told to resume, in an offer not yet answered or not yet sent.
    pub(crate) fn resuming(&self, mid: Mid) -> bool {
        self.offered_directions
            .contains(&(mid, Direction::SendOnly))
            || self.queued(mid, Direction::SendOnly)
    }

    /// Whether `mid` is queued to go `direction` in an offer not yet sent.
    pub(crate) fn queued(&self, mid: Mid, direction: Direction) -> bool {
        self.directions.contains(&(mid, direction))
    }
}

impl Participant {
    pub(crate) fn new(
        id: ParticipantId,
        room: RoomId,
        waiting: bool,
        config: &Config,
        crypto: &Arc<CryptoProvider>,
        now: Instant,
        bwe: bool,
    ) -> Result<Self, CoreError> {
        let creds = IceCreds::new();
        let ufrag = creds.ufrag.clone();
        let mut rtc = Rtc::builder()
            .set_ice_lite(true)
            .set_rtp_mode(true)
            // RED is offered so subscribers whose downlink loses packets can get it (red.rs).
            .enable_opus(true, true)
            .set_local_ice_credentials(creds)
            .set_crypto_provider(Arc::clone(crypto))
            .set_stats_interval(config.stats_interval)
            .enable_bwe(config.bwe_initial_bps.filter(|_| bwe).map(Bitrate::bps))
            .build(now);
        for candidate in candidates(config)? {
            let addr = candidate.addr();
            if rtc.add_local_candidate(candidate).is_none() {
                return Err(CoreError::Candidate(addr.to_string()));
            }
        }
        Ok(Participant {
            id,
            room,
            rtc,
            ufrag,
            waiting,
            published: Vec::new(),
            outgoing: HashMap::new(),
            negotiation: Negotiation::default(),
            retired: Vec::new(),
            feedback: HashMap::new(),
            media_seen: false,
            connected_at: None,
            quality: QualityMeter::default(),
            downlink: Downlink::default(),
        })
    }

    /// Whether media may be sent to this participant: its session is connected and it holds
    /// the SRTP keys, proven by its own SRTP (any publishing client sends some right after
    /// its DTLS handshake) or presumed [`KEYS_GRACE`] after the session connected (a client
    /// that publishes nothing).
    pub(crate) fn receives_media(&mut self, now: Instant) -> bool {
        if !self.rtc.is_connected() {
            return false;
        }
        if self.media_seen {
            return true;
        }
        let connected_at = *self.connected_at.get_or_insert(now);
        now.saturating_duration_since(connected_at) >= KEYS_GRACE
    }

    /// Polls the `Rtc` until it yields its next deadline, moving what it produced into `out`.
    pub(crate) fn drain(&mut self, out: &mut Outputs) {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(at)) => {
                    out.timers.set(Timer::Rtc(self.id), at);
                    return;
                }
                Ok(Output::Transmit(t)) => out.transmits.push_back(Transmit {
                    transport: Transport::of(t.proto),
                    source: t.source,
                    destination: t.destination,
                    contents: t.contents.into(),
                }),
                Ok(Output::Event(event)) => self.on_event(event, out),
                Err(error) => {
                    out.timers.cancel(Timer::Rtc(self.id));
                    out.work.push_back(Work::Fail {
                        participant: self.id,
                        error,
                    });
                    return;
                }
            }
        }
    }

    fn on_event(&mut self, event: RtcEvent, out: &mut Outputs) {
        let participant = self.id;
        match event {
            RtcEvent::Connected => out.events.push_back(Event::Connected { participant }),
            RtcEvent::IceConnectionStateChange(IceConnectionState::Disconnected)
            | RtcEvent::Closed => {
                out.events.push_back(Event::Disconnected { participant });
                if let Some(quality) = self.quality.disconnected() {
                    out.events.push_back(Event::ConnectionQuality {
                        participant,
                        quality,
                    });
                }
            }
            RtcEvent::IceConnectionStateChange(IceConnectionState::Checking) => {
                if let Some(quality) = self.quality.checking() {
                    out.events.push_back(Event::ConnectionQuality {
                        participant,
                        quality,
                    });
                }
            }
            RtcEvent::IceConnectionStateChange(
                IceConnectionState::Connected | IceConnectionState::Completed,
            ) => self.quality.reconnected(),
            RtcEvent::MediaAdded(added) if added.direction.is_receiving() => {
                out.work.push_back(Work::Publish {
                    participant,
                    mid: added.mid,
                    kind: added.kind,
                });
            }
            RtcEvent::MediaChanged(changed) => {
                let kind = self.rtc.media(changed.mid).map(|m| m.kind());
                match kind {
                    Some(kind) if changed.direction.is_receiving() => {
                        out.work.push_back(Work::Publish {
                            participant,
                            mid: changed.mid,
                            kind,
                        })
                    }
                    _ => out.work.push_back(Work::Unpublish {
                        track: TrackId {
                            participant,
                            mid: changed.mid,
                        },
                    }),
                }
            }
            RtcEvent::RtpPacket(packet) => {
                if !self.media_seen {
                    self.media_seen = true;
                    out.events.push_back(Event::FirstMedia { participant });
                }
                let stream = self
                    .rtc
                    .direct_api()
                    .stream_rx(&packet.header.ssrc)
                    .map(|stream| (stream.mid(), stream.rid()));
                if let Some((mid, rid)) = stream {
                    out.work.push_back(Work::Forward {
                        track: TrackId { participant, mid },
                        rid,
                        packet,
                    });
                }
            }
            RtcEvent::KeyframeRequest(request) => {
                if let Some(track) = self.outgoing.get(&request.mid) {
                    out.work.push_back(Work::Keyframe {
                        track: *track,
                        subscriber: participant,
                        kind: request.kind,
                    });
                }
            }
            RtcEvent::StreamPaused(paused) => out.work.push_back(Work::LayerPaused {
                track: TrackId {
                    participant,
                    mid: paused.mid,
                },
                rid: paused.rid,
                paused: paused.paused,
            }),
            RtcEvent::MediaEgressStats(stats) => {
                let last = self.feedback.entry(stats.mid).or_default();
                out.nacks_received += stats.nacks.saturating_sub(last.0);
                out.plis_received += stats.plis.saturating_sub(last.1);
                *last = (stats.nacks.max(last.0), stats.plis.max(last.1));
                if let Some(loss) = stats.loss {
                    self.quality.stream_loss(loss);
                    let worst = self.downlink.report_loss.map_or(loss, |l| l.max(loss));
                    self.downlink.report_loss = Some(worst);
                }
                // The RTT from the client's RTCP receiver reports (LSR/DLSR) on this leg. The
                // peer-level RTT below comes from TWCC only, so without this a client that
                // sends receiver reports but no TWCC feedback (webrtc-rs by default) has none.
                if let Some(rtt) = stats.rtt {
                    self.quality.rtt(rtt);
                    out.events.push_back(Event::Rtt { participant, rtt });
                }
            }
            RtcEvent::MediaIngressStats(stats) => {
                if let Some(loss) = stats.loss {
                    self.quality.stream_loss(loss);
                }
            }
            RtcEvent::EgressBitrateEstimate(BweKind::Twcc {
                estimate,
                can_probe,
            }) => {
                self.downlink.smoothed = can_probe.then(|| estimate.as_u64());
                out.work.push_back(Work::Allocate { participant });
            }
            // The session's statistics come once per interval: grade it then.
            RtcEvent::PeerStats(stats) => {
                self.downlink.raw = stats.bwe_tx.map(|bwe| bwe.as_u64());
                let report_loss = self.downlink.report_loss.take();
                self.downlink.loss = stats.egress_loss_fraction.or(report_loss);
                if let Some(bps) = self.downlink.estimate() {
                    out.events.push_back(Event::Bandwidth { participant, bps });
                }
                for loss in [stats.egress_loss_fraction, stats.ingress_loss_fraction]
                    .into_iter()
                    .flatten()
                {
                    self.quality.loss(loss);
                }
                if let Some(rtt) = stats.rtt {
                    self.quality.rtt(rtt);
                    out.events.push_back(Event::Rtt { participant, rtt });
                }
                if let Some(quality) = self.quality.grade() {
                    out.events.push_back(Event::ConnectionQuality {
                        participant,
                        quality,
                    });
                }
            }
            _ => {}
        }
    }

    /// Starts a graceful close and sends what str0m queues for it (RTCP BYE, DTLS
    /// close_notify); events and deadlines of a leaving participant no longer matter.
    pub(crate) fn close(mut self, out: &mut Outputs) {
        if self.rtc.close().is_err() {
            return;
        }
        for _ in 0..CLOSE_FLUSH_LIMIT {
            match self.rtc.poll_output() {
                Ok(Output::Transmit(t)) => out.transmits.push_back(Transmit {
                    transport: Transport::of(t.proto),
                    source: t.source,
                    destination: t.destination,
                    contents: t.contents.into(),
                }),
                Ok(Output::Event(_)) => {}
                Ok(Output::Timeout(_)) | Err(_) => return,
            }
        }
    }
}

/// The host candidates every participant's session announces: UDP unless turned off, and a
/// passive TCP candidate when configured (str0m gives TCP host candidates a lower priority,
/// so a client that can reach both prefers UDP).
fn candidates(config: &Config) -> Result<Vec<Candidate>, CoreError> {
    let bad = |e: str0m::error::IceError| CoreError::Candidate(e.to_string());
    let mut candidates = Vec::with_capacity(2);
    if config.announce_udp {
        candidates.push(Candidate::host(config.host_candidate, "udp").map_err(bad)?);
    }
    if let Some(tcp) = config.tcp_candidate {
        candidates.push(
            Candidate::builder()
                .tcp()
                .host(tcp)
                .tcptype(TcpType::Passive)
                .build()
                .map_err(bad)?,
        );
    }
    if candidates.is_empty() {
        return Err(CoreError::Candidate("no transport announced".into()));
    }
    Ok(candidates)
}
