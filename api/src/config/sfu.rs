//! `[sfu]`: where Bedside's own SFU takes media. Serde's types are its only checks.

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

/// `[sfu]`: the SFU's media socket, announced address and worker count.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SfuConfig {
    /// UDP address for media.
    pub udp: SocketAddr,
    /// Address announced in ICE candidates; unset = first non-loopback IPv4 or 127.0.0.1.
    pub announce_ip: Option<IpAddr>,
    /// Media workers; 0 = one per core.
    pub workers: usize,
}

impl Default for SfuConfig {
    fn default() -> Self {
        Self {
            udp: SocketAddr::from(([0, 0, 0, 0], 50000)),
            announce_ip: None,
            workers: 0,
        }
    }
}
