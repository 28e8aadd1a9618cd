//! An impaired network path between one peer and the SFU, since the kernel here has no netem
//! qdisc: a UDP relay on loopback that the peer's ICE reaches instead of the SFU's candidate
//! (the peer rewrites the candidate in the server's SDP, [`Relay::rewrite_sdp`]).
//!
//! Towards the peer (its downlink, which the SFU's layer choice follows) the relay drops a
//! share of the datagrams at random, limits the rate as `tbf` does (a bucket drained at the
//! rate, with a bounded queue; what overflows is dropped) and delays each datagram by a fixed
//! delay plus random jitter, keeping their order, as real paths do. Towards the SFU it only
//! delays, so the round trip is twice the delay. The shaping is [`Shaper`], a pure function of
//! time and lengths, tested below without sockets.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::Rng as _;
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The largest datagram relayed (the SFU sends at most its MTU).
const MAX_DATAGRAM: usize = 2048;
/// The queue a rate limit holds before it drops, as `tbf latency`.
const DEFAULT_QUEUE: Duration = Duration::from_millis(200);
/// Bits on the wire per datagram beyond its payload: IPv4 and UDP headers.
const OVERHEAD_BYTES: usize = 28;

/// What the path does to a peer's traffic: `--impair rate=300kbit,loss=2%,delay=80ms`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Impairment {
    /// The downlink's rate in bit/s; `None` for no limit.
    pub rate_bps: Option<u64>,
    /// The share of downlink datagrams dropped at random, 0 to 1.
    pub loss: f64,
    /// One-way delay, both ways.
    #[serde(with = "millis")]
    pub delay: Duration,
    /// Up to this much more delay on the downlink, at random (order is kept).
    #[serde(with = "millis")]
    pub jitter: Duration,
    /// How long a rate-limited queue may get before it drops.
    #[serde(with = "millis")]
    pub queue: Duration,
}

mod millis {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

impl Default for Impairment {
    fn default() -> Self {
        Impairment {
            rate_bps: None,
            loss: 0.0,
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            queue: DEFAULT_QUEUE,
        }
    }
}

impl FromStr for Impairment {
    type Err = String;

    /// `key=value` pairs separated by commas: `rate` (`300kbit`, `2mbit`, `64000bit`), `loss`
    /// (`2%`), `delay`, `jitter` and `queue` (`80ms`, `1s`).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut impairment = Impairment::default();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = part.split_once('=').ok_or_else(|| {
                format!("{part:?}: use key=value (rate, loss, delay, jitter, queue)")
            })?;
            match key {
                "rate" => impairment.rate_bps = Some(parse_rate(value)?),
                "loss" => impairment.loss = parse_percent(value)?,
                "delay" => impairment.delay = crate::parse_duration(value)?,
                "jitter" => impairment.jitter = crate::parse_duration(value)?,
                "queue" => impairment.queue = crate::parse_duration(value)?,
                other => {
                    return Err(format!(
                        "unknown impairment {other:?}: use rate, loss, delay, jitter or queue"
                    ));
                }
            }
        }
        Ok(impairment)
    }
}

fn parse_rate(text: &str) -> Result<u64, String> {
    let lower = text.to_ascii_lowercase();
    let (number, scale) = if let Some(n) = lower.strip_suffix("kbit") {
        (n, 1e3)
    } else if let Some(n) = lower.strip_suffix("mbit") {
        (n, 1e6)
    } else if let Some(n) = lower.strip_suffix("bit") {
        (n, 1.0)
    } else {
        return Err(format!("rate {text:?}: use e.g. 300kbit, 2mbit"));
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("rate {text:?}: not a number"))?;
    let bps = value * scale;
    if (1_000.0..=10e9).contains(&bps) {
        Ok(bps as u64)
    } else {
        Err(format!("rate {text:?}: between 1kbit and 10000mbit"))
    }
}

fn parse_percent(text: &str) -> Result<f64, String> {
    let value: f64 = text
        .strip_suffix('%')
        .ok_or_else(|| format!("loss {text:?}: a percentage such as 2%"))?
        .parse()
        .map_err(|_| format!("loss {text:?}: not a number"))?;
    if (0.0..=100.0).contains(&value) {
        Ok(value / 100.0)
    } else {
        Err(format!("loss {text:?}: between 0% and 100%"))
    }
}

/// What happened to one datagram on the downlink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// It leaves the relay at this time.
    Deliver(Instant),
    /// Dropped at random (`loss`).
    Lost,
    /// Dropped because the rate-limited queue was full.
    Overflow,
}

/// The downlink's shaping, as a function of arrival times and lengths.
#[derive(Debug)]
pub struct Shaper {
    impairment: Impairment,
    /// When the link finishes sending what it has queued.
    busy_until: Option<Instant>,
    /// The last delivery time given out, so jitter never reorders.
    last: Option<Instant>,
}

impl Shaper {
    /// A shaper for `impairment`.
    #[must_use]
    pub fn new(impairment: Impairment) -> Self {
        Shaper {
            impairment,
            busy_until: None,
            last: None,
        }
    }

    /// The fate of a datagram of `len` bytes arriving at `now`; `chance` and `spread` are
    /// random draws in [0, 1) for loss and jitter.
    pub fn admit(&mut self, now: Instant, len: usize, chance: f64, spread: f64) -> Fate {
        if chance < self.impairment.loss {
            return Fate::Lost;
        }
        let mut leaves = now;
        if let Some(rate) = self.impairment.rate_bps {
            let start = self.busy_until.map_or(now, |busy| busy.max(now));
            if start - now > self.impairment.queue {
                return Fate::Overflow;
            }
            let bits = 8 * (len + OVERHEAD_BYTES) as u64;
            leaves = start + Duration::from_nanos(bits.saturating_mul(1_000_000_000) / rate.max(1));
            self.busy_until = Some(leaves);
        }
        let at = leaves + self.impairment.delay + self.impairment.jitter.mul_f64(spread);
        let at = self.last.map_or(at, |last| at.max(last));
        self.last = Some(at);
        Fate::Deliver(at)
    }
}

/// Datagrams the relay handled, by fate.
#[derive(Debug, Default)]
pub struct RelayStats {
    /// Datagrams relayed to the peer.
    pub delivered: AtomicU64,
    /// Downlink datagrams dropped at random.
    pub lost: AtomicU64,
    /// Downlink datagrams dropped by the rate limit's full queue.
    pub overflowed: AtomicU64,
    /// Datagrams relayed to the SFU.
    pub uplink: AtomicU64,
}

/// A running relay for one peer.
#[derive(Debug)]
pub struct Relay {
    /// Where the peer sends (the address that replaces the SFU's in its SDP).
    pub local: SocketAddr,
    /// What it did so far.
    pub stats: Arc<RelayStats>,
    target: Arc<std::sync::Mutex<Option<SocketAddr>>>,
    task: JoinHandle<()>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Relay {
    /// Starts a relay on loopback; it forwards once [`Relay::rewrite_sdp`] has seen the SFU's
    /// UDP candidate.
    ///
    /// # Errors
    /// When a loopback UDP socket cannot be bound.
    pub async fn start(impairment: Impairment) -> std::io::Result<Relay> {
        let peer_side = UdpSocket::bind("127.0.0.1:0").await?;
        let sfu_side = UdpSocket::bind("127.0.0.1:0").await?;
        let local = peer_side.local_addr()?;
        let stats = Arc::new(RelayStats::default());
        let target = Arc::new(std::sync::Mutex::new(None));
        let task = tokio::spawn(relay(
            peer_side,
            sfu_side,
            impairment,
            Arc::clone(&target),
            Arc::clone(&stats),
        ));
        Ok(Relay {
            local,
            stats,
            target,
            task,
        })
    }

    /// `sdp` with the SFU's UDP host candidate pointed at this relay; the relay then forwards
    /// to the address it replaced. Other candidates are left as they are.
    #[must_use]
    pub fn rewrite_sdp(&self, sdp: &str) -> String {
        let mut out = String::with_capacity(sdp.len());
        for line in sdp.split_inclusive('\n') {
            match rewrite_candidate(line, self.local) {
                Some((rewritten, sfu)) => {
                    if let Ok(mut target) = self.target.lock() {
                        *target = Some(sfu);
                    }
                    out.push_str(&rewritten);
                }
                None => out.push_str(line),
            }
        }
        out
    }
}

/// A UDP candidate line with its address replaced by `relay`, and the address it had.
fn rewrite_candidate(line: &str, relay: SocketAddr) -> Option<(String, SocketAddr)> {
    let body = line.trim_end();
    let rest = body.strip_prefix("a=candidate:")?;
    // foundation component transport priority address port typ ...
    let fields: Vec<&str> = rest.split(' ').collect();
    if fields.len() < 8 || !fields[2].eq_ignore_ascii_case("udp") || fields[6] != "typ" {
        return None;
    }
    let sfu: SocketAddr = format!("{}:{}", fields[4], fields[5]).parse().ok()?;
    let mut fields = fields;
    let (ip, port) = (relay.ip().to_string(), relay.port().to_string());
    fields[4] = &ip;
    fields[5] = &port;
    let ending = &line[body.len()..];
    Some((format!("a=candidate:{}{ending}", fields.join(" ")), sfu))
}

async fn relay(
    peer_side: UdpSocket,
    sfu_side: UdpSocket,
    impairment: Impairment,
    target: Arc<std::sync::Mutex<Option<SocketAddr>>>,
    stats: Arc<RelayStats>,
) {
    let mut shaper = Shaper::new(impairment);
    let mut down: VecDeque<(Instant, Vec<u8>)> = VecDeque::new();
    let mut up: VecDeque<(Instant, Vec<u8>)> = VecDeque::new();
    let mut peer: Option<SocketAddr> = None;
    let mut from_peer = vec![0u8; MAX_DATAGRAM];
    let mut from_sfu = vec![0u8; MAX_DATAGRAM];
    loop {
        let next = match (down.front(), up.front()) {
            (Some((a, _)), Some((b, _))) => Some(*a.min(b)),
            (Some((a, _)), None) | (None, Some((a, _))) => Some(*a),
            (None, None) => None,
        };
        let sleep = tokio::time::sleep_until(
            next.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600)),
        );
        tokio::select! {
            received = peer_side.recv_from(&mut from_peer) => {
                let Ok((len, from)) = received else { continue };
                peer = Some(from);
                up.push_back((Instant::now() + impairment.delay, from_peer[..len].to_vec()));
            }
            received = sfu_side.recv_from(&mut from_sfu) => {
                let Ok((len, _)) = received else { continue };
                let (chance, spread) = {
                    let mut rng = rand::rng();
                    (rng.random::<f64>(), rng.random::<f64>())
                };
                match shaper.admit(Instant::now(), len, chance, spread) {
                    Fate::Deliver(at) => down.push_back((at, from_sfu[..len].to_vec())),
                    Fate::Lost => { stats.lost.fetch_add(1, Ordering::Relaxed); }
                    Fate::Overflow => { stats.overflowed.fetch_add(1, Ordering::Relaxed); }
                }
            }
            () = sleep, if next.is_some() => {}
        }
        let now = Instant::now();
        while down.front().is_some_and(|(at, _)| *at <= now) {
            let Some((_, bytes)) = down.pop_front() else {
                break;
            };
            if let Some(peer) = peer {
                let _ = peer_side.send_to(&bytes, peer).await;
                stats.delivered.fetch_add(1, Ordering::Relaxed);
            }
        }
        let sfu = target.lock().ok().and_then(|t| *t);
        while up.front().is_some_and(|(at, _)| *at <= now) {
            let Some((_, bytes)) = up.pop_front() else {
                break;
            };
            if let Some(sfu) = sfu {
                let _ = sfu_side.send_to(&bytes, sfu).await;
                stats.uplink.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_issue_example_parses_and_bad_values_are_refused() {
        let parsed: Impairment = "rate=300kbit,loss=2%,delay=80ms".parse().expect("parses");
        assert_eq!(parsed.rate_bps, Some(300_000));
        assert!((parsed.loss - 0.02).abs() < 1e-9);
        assert_eq!(parsed.delay, Duration::from_millis(80));
        assert_eq!(parsed.jitter, Duration::ZERO);
        assert_eq!(parsed.queue, DEFAULT_QUEUE);
        let full: Impairment = "rate=2mbit, jitter=10ms, queue=1s".parse().expect("parses");
        assert_eq!(full.rate_bps, Some(2_000_000));
        assert_eq!(full.jitter, Duration::from_millis(10));
        assert_eq!(full.queue, Duration::from_secs(1));
        for bad in [
            "rate=300",
            "rate=fastkbit",
            "rate=0kbit",
            "loss=2",
            "loss=101%",
            "delay=soon",
            "speed=1kbit",
            "rate",
        ] {
            assert!(bad.parse::<Impairment>().is_err(), "{bad} is refused");
        }
    }

    #[test]
    fn a_rate_limit_spaces_datagrams_and_drops_what_overflows_its_queue() {
        let impairment = Impairment {
            rate_bps: Some(100_000),
            queue: Duration::from_millis(100),
            ..Impairment::default()
        };
        let mut shaper = Shaper::new(impairment);
        let now = Instant::now();
        // 1222 bytes + 28 of headers = 10,000 bits = 100 ms at 100 kbit/s.
        assert_eq!(
            shaper.admit(now, 1222, 0.5, 0.0),
            Fate::Deliver(now + Duration::from_millis(100))
        );
        assert_eq!(
            shaper.admit(now, 1222, 0.5, 0.0),
            Fate::Deliver(now + Duration::from_millis(200))
        );
        assert_eq!(shaper.admit(now, 1222, 0.5, 0.0), Fate::Overflow);
        let later = now + Duration::from_millis(150);
        assert_eq!(
            shaper.admit(later, 1222, 0.5, 0.0),
            Fate::Deliver(now + Duration::from_millis(300))
        );
    }

    #[test]
    fn loss_and_jitter_follow_their_draws_and_order_is_kept() {
        let impairment = Impairment {
            loss: 0.1,
            delay: Duration::from_millis(80),
            jitter: Duration::from_millis(20),
            ..Impairment::default()
        };
        let mut shaper = Shaper::new(impairment);
        let now = Instant::now();
        assert_eq!(shaper.admit(now, 100, 0.05, 0.0), Fate::Lost);
        assert_eq!(
            shaper.admit(now, 100, 0.5, 1.0),
            Fate::Deliver(now + Duration::from_millis(100))
        );
        // A smaller draw would overtake the one before: it waits for it instead.
        let next = now + Duration::from_millis(1);
        assert_eq!(
            shaper.admit(next, 100, 0.5, 0.0),
            Fate::Deliver(now + Duration::from_millis(100))
        );
    }

    #[test]
    fn the_sfus_udp_candidate_is_pointed_at_the_relay() {
        let relay: SocketAddr = "127.0.0.1:4000".parse().expect("addr");
        let line = "a=candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host\r\n";
        let (rewritten, sfu) = rewrite_candidate(line, relay).expect("udp candidate");
        assert_eq!(
            rewritten,
            "a=candidate:1 1 udp 2130706431 127.0.0.1 4000 typ host\r\n"
        );
        assert_eq!(sfu, "127.0.0.1:50000".parse::<SocketAddr>().expect("addr"));
        let tcp = "a=candidate:2 1 tcp 1 127.0.0.1 50000 typ host tcptype passive\r\n";
        assert!(rewrite_candidate(tcp, relay).is_none());
        assert!(rewrite_candidate("a=mid:0\r\n", relay).is_none());
    }
}
