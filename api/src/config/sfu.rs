//! `[sfu]`: where Bedside's own SFU takes media: UDP ports, the ICE-TCP listener, which of the
//! two are announced, and the caps on TCP connections.

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// A way media reaches the SFU, as listed in `sfu.transports`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SfuTransport {
    /// UDP on the workers' consecutive ports from `sfu.udp`.
    Udp,
    /// Passive ICE-TCP (RFC 6544, RFC 4571 framing) on `sfu.tcp`.
    Tcp,
}

/// `[sfu]`: the SFU's media sockets, announced address and worker count.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SfuConfig {
    /// First UDP port of the workers' consecutive ports.
    pub udp: SocketAddr,
    /// ICE-TCP listener; unset = the address and port of `sfu.udp` (so one number is opened
    /// for both protocols; port 0 stays ephemeral).
    pub tcp: Option<SocketAddr>,
    /// What is bound and announced: `["udp", "tcp"]` (default), or one of them.
    pub transports: Vec<SfuTransport>,
    /// Open ICE-TCP connections, all together; more are closed at accept.
    pub tcp_max_connections: usize,
    /// Open ICE-TCP connections from one IP address; more are closed at accept.
    pub tcp_max_connections_per_ip: usize,
    /// Address announced in ICE candidates; unset = first non-loopback IPv4 or 127.0.0.1.
    pub announce_ip: Option<IpAddr>,
    /// Media workers; 0 = one per core.
    pub workers: usize,
    /// The bandwidth estimate towards each subscriber before its feedback refines it, in
    /// kbit/s; 0 turns bandwidth estimation off (layers then follow size alone, and video
    /// is never paused for bandwidth).
    pub bwe_initial_kbps: u32,
}

impl Default for SfuConfig {
    fn default() -> Self {
        Self {
            udp: SocketAddr::from(([0, 0, 0, 0], 50000)),
            tcp: None,
            transports: vec![SfuTransport::Udp, SfuTransport::Tcp],
            tcp_max_connections: 4096,
            tcp_max_connections_per_ip: 64,
            announce_ip: None,
            workers: 0,
            bwe_initial_kbps: 1000,
        }
    }
}

impl SfuConfig {
    /// Whether `transport` is bound and announced.
    pub fn uses(&self, transport: SfuTransport) -> bool {
        self.transports.contains(&transport)
    }

    /// The initial bandwidth estimate in bit/s, or `None` when estimation is off.
    pub fn bwe_initial_bps(&self) -> Option<u64> {
        (self.bwe_initial_kbps > 0).then(|| u64::from(self.bwe_initial_kbps) * 1000)
    }

    /// The ICE-TCP listener's address: `sfu.tcp`, else `sfu.udp`'s.
    pub fn tcp_addr(&self) -> SocketAddr {
        self.tcp.unwrap_or(self.udp)
    }

    pub(super) fn check(&self) -> Result<(), ConfigError> {
        if self.bwe_initial_kbps != 0 && !(50..=100_000).contains(&self.bwe_initial_kbps) {
            return Err(ConfigError::new(
                "sfu.bwe_initial_kbps",
                "must be 0 (off) or between 50 and 100000",
            ));
        }
        if self.transports.is_empty() {
            return Err(ConfigError::new(
                "sfu.transports",
                "must name \"udp\", \"tcp\" or both",
            ));
        }
        if self.transports.len() > 2
            || self.transports.len() == 2 && self.transports[0] == self.transports[1]
        {
            return Err(ConfigError::new(
                "sfu.transports",
                "must name each of \"udp\" and \"tcp\" at most once",
            ));
        }
        if self.uses(SfuTransport::Tcp) {
            if self.tcp_max_connections == 0 {
                return Err(ConfigError::new(
                    "sfu.tcp_max_connections",
                    "must be at least 1 while \"tcp\" is in sfu.transports",
                ));
            }
            if !(1..=self.tcp_max_connections).contains(&self.tcp_max_connections_per_ip) {
                return Err(ConfigError::new(
                    "sfu.tcp_max_connections_per_ip",
                    "must be between 1 and sfu.tcp_max_connections",
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transports_must_be_a_non_empty_set() {
        let mut sfu = SfuConfig::default();
        sfu.check().expect("defaults");
        sfu.transports = vec![SfuTransport::Tcp];
        sfu.check().expect("tcp only");
        sfu.transports = Vec::new();
        assert_eq!(sfu.check().unwrap_err().key, "sfu.transports");
        sfu.transports = vec![SfuTransport::Udp, SfuTransport::Udp];
        assert_eq!(sfu.check().unwrap_err().key, "sfu.transports");
        sfu.transports = vec![SfuTransport::Tcp];
        sfu.tcp_max_connections_per_ip = 0;
        assert_eq!(
            sfu.check().unwrap_err().key,
            "sfu.tcp_max_connections_per_ip"
        );
    }

    #[test]
    fn the_initial_estimate_is_off_or_within_bounds() {
        let mut sfu = SfuConfig::default();
        assert_eq!(sfu.bwe_initial_bps(), Some(1_000_000));
        sfu.bwe_initial_kbps = 0;
        sfu.check().expect("off");
        assert_eq!(sfu.bwe_initial_bps(), None);
        for bad in [1, 49, 100_001] {
            sfu.bwe_initial_kbps = bad;
            assert_eq!(sfu.check().unwrap_err().key, "sfu.bwe_initial_kbps");
        }
    }

    #[test]
    fn the_tcp_listener_defaults_to_the_udp_base_address() {
        let mut sfu = SfuConfig::default();
        assert_eq!(sfu.tcp_addr(), sfu.udp);
        sfu.tcp = Some(SocketAddr::from(([0, 0, 0, 0], 443)));
        assert_eq!(sfu.tcp_addr().port(), 443);
    }
}
