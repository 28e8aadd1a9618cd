use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;

use super::ids::{ParticipantId, Transport};
use super::stun;

/// How many remote addresses one participant may be known by. ICE may try several candidate
/// pairs, but a peer spraying STUN with a valid ufrag from many ports must not grow the map
/// without bound: the oldest address is forgotten first.
pub(crate) const MAX_ADDRS_PER_PARTICIPANT: usize = 8;

/// A remote endpoint: its address on one transport. A UDP port and a TCP port with the same
/// number on one host are different endpoints (two tabs on one machine, say).
pub(crate) type Endpoint = (Transport, SocketAddr);

/// Maps an incoming datagram to its participant in O(1): by remote endpoint once known, and by
/// the ICE ufrag in a STUN USERNAME for the first packets from a new address. A new address is
/// only remembered ([`Demux::learn`]) once the participant's session has authenticated the
/// STUN message that named it, so forged binding requests can neither route garbage into a
/// session nor push a participant's real address out of the map.
#[derive(Debug, Default)]
pub(crate) struct Demux {
    by_addr: HashMap<Endpoint, ParticipantId>,
    by_ufrag: HashMap<String, ParticipantId>,
    addrs_of: HashMap<ParticipantId, VecDeque<Endpoint>>,
}

impl Demux {
    pub(crate) fn register(&mut self, participant: ParticipantId, local_ufrag: String) {
        self.by_ufrag.insert(local_ufrag, participant);
        self.addrs_of.entry(participant).or_default();
    }

    /// The participant a datagram belongs to, and whether `source` is an address not yet
    /// learned for it (then the caller authenticates the datagram and calls
    /// [`Demux::learn`]).
    pub(crate) fn lookup(
        &self,
        source: Endpoint,
        datagram: &[u8],
    ) -> Option<(ParticipantId, bool)> {
        if let Some(participant) = self.by_addr.get(&source) {
            return Some((*participant, false));
        }
        Some((self.by_stun(datagram)?, true))
    }

    /// The participant whose local ufrag a STUN message's USERNAME names.
    pub(crate) fn by_stun(&self, datagram: &[u8]) -> Option<ParticipantId> {
        self.by_ufrag.get(stun::local_ufrag(datagram)?).copied()
    }

    /// Routes later datagrams from `source` to `participant`.
    pub(crate) fn learn(&mut self, participant: ParticipantId, source: Endpoint) {
        let Some(addrs) = self.addrs_of.get_mut(&participant) else {
            return;
        };
        if addrs.len() >= MAX_ADDRS_PER_PARTICIPANT
            && let Some(oldest) = addrs.pop_front()
        {
            self.by_addr.remove(&oldest);
        }
        addrs.push_back(source);
        self.by_addr.insert(source, participant);
    }

    /// Replaces a participant's local ufrag after an ICE restart. Its learned addresses stay:
    /// the old path keeps working until ICE moves to the new one.
    pub(crate) fn rekey(&mut self, participant: ParticipantId, old: &str, new: String) {
        if self.by_ufrag.get(old) == Some(&participant) {
            self.by_ufrag.remove(old);
        }
        self.by_ufrag.insert(new, participant);
    }

    pub(crate) fn unregister(&mut self, participant: ParticipantId, local_ufrag: &str) {
        self.by_ufrag.remove(local_ufrag);
        for addr in self.addrs_of.remove(&participant).unwrap_or_default() {
            self.by_addr.remove(&addr);
        }
    }

    pub(crate) fn addr_count(&self) -> usize {
        self.by_addr.len()
    }

    pub(crate) fn ufrag_count(&self) -> usize {
        self.by_ufrag.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding_request(ufrag: &str) -> Vec<u8> {
        let username = format!("{ufrag}:remote");
        let mut msg = vec![0x00, 0x01];
        let padded = (username.len() + 3) & !3;
        msg.extend_from_slice(&((4 + padded) as u16).to_be_bytes());
        msg.extend_from_slice(&[0x21, 0x12, 0xA4, 0x42]);
        msg.extend_from_slice(&[1; 12]);
        msg.extend_from_slice(&0x0006u16.to_be_bytes());
        msg.extend_from_slice(&(username.len() as u16).to_be_bytes());
        msg.extend_from_slice(username.as_bytes());
        msg.resize(20 + 4 + padded, 0);
        msg
    }

    fn addr(port: u16) -> Endpoint {
        (Transport::Udp, SocketAddr::from(([10, 0, 0, 1], port)))
    }

    #[test]
    fn learns_the_address_from_the_ufrag_then_routes_by_address() {
        let mut demux = Demux::default();
        let alice = ParticipantId(1);
        demux.register(alice, "alice".into());
        assert_eq!(demux.lookup(addr(1), &[0x80, 0, 0, 0]), None);
        assert_eq!(
            demux.lookup(addr(1), &binding_request("alice")),
            Some((alice, true))
        );
        assert_eq!(
            demux.lookup(addr(1), &[0x80, 0, 0, 0]),
            None,
            "nothing is learned by looking"
        );
        demux.learn(alice, addr(1));
        assert_eq!(
            demux.lookup(addr(1), &[0x80, 0, 0, 0]),
            Some((alice, false))
        );
        assert_eq!(demux.lookup(addr(2), &binding_request("bob")), None);
    }

    #[test]
    fn an_ice_restart_moves_the_participant_to_its_new_ufrag() {
        let mut demux = Demux::default();
        let alice = ParticipantId(1);
        demux.register(alice, "old".into());
        demux.learn(alice, addr(1));
        demux.rekey(alice, "old", "new".into());
        assert_eq!(demux.lookup(addr(2), &binding_request("old")), None);
        assert_eq!(
            demux.lookup(addr(2), &binding_request("new")),
            Some((alice, true))
        );
        assert_eq!(
            demux.lookup(addr(1), &[0x80]),
            Some((alice, false)),
            "the old path still routes"
        );
        assert_eq!(demux.ufrag_count(), 1);
        demux.unregister(alice, "new");
        assert_eq!((demux.ufrag_count(), demux.addr_count()), (0, 0));
    }

    #[test]
    fn the_same_port_on_udp_and_tcp_is_two_endpoints() {
        let mut demux = Demux::default();
        let (alice, bob) = (ParticipantId(1), ParticipantId(2));
        demux.register(alice, "alice".into());
        demux.register(bob, "bob".into());
        let (udp, tcp) = (addr(5000), (Transport::Tcp, addr(5000).1));
        demux.learn(alice, udp);
        assert_eq!(demux.lookup(tcp, &[0x80]), None);
        assert_eq!(
            demux.lookup(tcp, &binding_request("bob")),
            Some((bob, true))
        );
        demux.learn(bob, tcp);
        assert_eq!(demux.lookup(udp, &[0x80]), Some((alice, false)));
        assert_eq!(demux.lookup(tcp, &[0x80]), Some((bob, false)));
    }

    #[test]
    fn addresses_per_participant_are_bounded_and_freed() {
        let mut demux = Demux::default();
        let alice = ParticipantId(1);
        demux.register(alice, "alice".into());
        for port in 0..100 {
            demux.learn(alice, addr(port));
        }
        assert_eq!(demux.addr_count(), MAX_ADDRS_PER_PARTICIPANT);
        assert_eq!(demux.lookup(addr(99), &[0x80]), Some((alice, false)));
        assert_eq!(demux.lookup(addr(0), &[0x80]), None);
        demux.unregister(alice, "alice");
        assert_eq!(demux.addr_count(), 0);
        assert_eq!(demux.ufrag_count(), 0);
    }
}
