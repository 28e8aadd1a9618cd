use std::fmt;

use str0m::media::Mid;
use str0m::net::Protocol;

/// A room, named by the caller (signaling uses the visit's UUID as a `u128`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomId(pub u128);

/// A participant, named by the caller; unique across all rooms of one [`Core`](super::Core).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParticipantId(pub u128);

/// A published track: the publishing participant and the media id of the m-line on which the
/// publisher sends it to the SFU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrackId {
    /// Who publishes the track.
    pub participant: ParticipantId,
    /// The m-line in the publisher's own session.
    pub mid: Mid,
}

/// How a packet travels between the SFU and a client: UDP datagrams, or RFC 4571 frames on a
/// passive ICE-TCP connection (RFC 6544) for networks that block UDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transport {
    /// One datagram per packet on a worker's UDP socket.
    Udp,
    /// One length-prefixed frame per packet on a TCP connection the client opened.
    Tcp,
}

impl Transport {
    pub(crate) fn protocol(self) -> Protocol {
        match self {
            Transport::Udp => Protocol::Udp,
            Transport::Tcp => Protocol::Tcp,
        }
    }

    /// str0m's protocols onto ours: the TLS and SSL-TCP variants are TCP framings the SFU
    /// never announces, so anything that is not UDP travels as TCP.
    pub(crate) fn of(protocol: Protocol) -> Self {
        match protocol {
            Protocol::Udp => Transport::Udp,
            _ => Transport::Tcp,
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        })
    }
}

impl fmt::Display for RoomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Display for ParticipantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Display for TrackId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.participant, self.mid)
    }
}
