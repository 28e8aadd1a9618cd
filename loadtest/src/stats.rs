//! Receiver-side RTP statistics (RFC 3550 §6.4.1 and appendix A.3/A.8) and percentiles.

use std::collections::BTreeMap;
use std::time::Instant;

/// What one receiver saw of one incoming RTP stream (one SSRC), kept as RFC 3550 keeps it.
#[derive(Debug, Clone, Default)]
pub struct RxStream {
    /// RTP clock rate of the stream (for jitter in milliseconds).
    pub clock_rate: u32,
    /// Packets received.
    pub packets: u64,
    /// Payload bytes received.
    pub bytes: u64,
    /// First extended sequence number seen.
    base_seq: Option<u64>,
    /// Highest extended sequence number seen.
    max_seq: u64,
    /// Interarrival jitter, in RTP clock ticks (×1, not the ×16 fixed point of appendix A.8).
    jitter: f64,
    /// Relative transit time of the previous packet, in ticks.
    last_transit: Option<f64>,
    /// Arrival of the first and the latest packet.
    first_arrival: Option<Instant>,
    last_arrival: Option<Instant>,
    /// Video: the width of the last keyframe, which is the simulcast layer the SFU forwards.
    width: Option<u16>,
    /// Video: packets received by the width of the keyframe before them.
    pub widths: BTreeMap<u16, u64>,
}

impl RxStream {
    /// A stream on a clock of `clock_rate` Hz.
    #[must_use]
    pub fn new(clock_rate: u32) -> Self {
        Self {
            clock_rate,
            ..Self::default()
        }
    }

    /// Accounts for one packet with sequence number `seq` and RTP timestamp `timestamp`,
    /// `bytes` of payload, arrived at `arrival`.
    pub fn on_packet(&mut self, seq: u16, timestamp: u32, bytes: usize, arrival: Instant) {
        self.packets += 1;
        self.bytes += bytes as u64;
        // Extend the 16-bit sequence number to the one nearest the highest seen so far.
        if self.base_seq.is_none() {
            self.base_seq = Some(u64::from(seq) + (1 << 16));
            self.max_seq = u64::from(seq) + (1 << 16);
        } else {
            let cycle = self.max_seq & !0xFFFF;
            let extended = [cycle.saturating_sub(1 << 16), cycle, cycle + (1 << 16)]
                .into_iter()
                .map(|c| c | u64::from(seq))
                .min_by_key(|e| e.abs_diff(self.max_seq))
                .unwrap_or(cycle | u64::from(seq));
            self.max_seq = self.max_seq.max(extended);
        }
        let first = *self.first_arrival.get_or_insert(arrival);
        self.last_arrival = Some(arrival);
        // Transit = arrival (in ticks since the first packet) − RTP timestamp; jitter is the
        // smoothed absolute change of transit between consecutive packets.
        let arrival_ticks =
            arrival.duration_since(first).as_secs_f64() * f64::from(self.clock_rate);
        let transit = arrival_ticks - f64::from(timestamp);
        if let Some(last) = self.last_transit {
            let mut d = (transit - last).abs();
            // A timestamp that wrapped shows as a jump of ~2^32 ticks: not jitter.
            if d > f64::from(u32::MAX) / 2.0 {
                d = (d - f64::from(u32::MAX) - 1.0).abs();
            }
            self.jitter += (d - self.jitter) / 16.0;
        }
        self.last_transit = Some(transit);
    }

    /// Accounts for one video packet whose payload starts a keyframe `width` wide (`None`:
    /// not a keyframe's first packet): it and what follows count for that width.
    pub fn on_video_width(&mut self, width: Option<u16>) {
        if width.is_some() {
            self.width = width;
        }
        if let Some(width) = self.width {
            *self.widths.entry(width).or_default() += 1;
        }
    }

    /// Packets expected from the sequence numbers seen (highest − first + 1).
    #[must_use]
    pub fn expected(&self) -> u64 {
        self.base_seq.map_or(0, |base| self.max_seq - base + 1)
    }

    /// Packets lost: expected but not received (duplicates can make it negative; clamped).
    #[must_use]
    pub fn lost(&self) -> u64 {
        self.expected().saturating_sub(self.packets)
    }

    /// Interarrival jitter in milliseconds.
    #[must_use]
    pub fn jitter_ms(&self) -> f64 {
        if self.clock_rate == 0 {
            return 0.0;
        }
        self.jitter * 1000.0 / f64::from(self.clock_rate)
    }

    /// Average payload bitrate between the first and the latest packet, in kbit/s.
    #[must_use]
    pub fn bitrate_kbps(&self) -> Option<f64> {
        let span = self.last_arrival?.duration_since(self.first_arrival?);
        (span.as_secs_f64() >= 1.0).then(|| self.bytes as f64 * 8.0 / span.as_secs_f64() / 1000.0)
    }
}

/// The `p`th percentile (0–100) of `values` by nearest rank; `None` when empty.
#[must_use]
pub fn percentile(values: &mut [f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * values.len() as f64).ceil() as usize;
    values.get(rank.clamp(1, values.len()) - 1).copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn loss_counts_gaps_across_a_sequence_wrap() {
        let start = Instant::now();
        let mut s = RxStream::new(90_000);
        // 65530..=65535, 0..=9 with 2 and 3 missing, one reordered.
        let mut seqs: Vec<u16> = (65530..=65535)
            .chain(0..10)
            .filter(|s| *s != 2 && *s != 3)
            .collect();
        seqs.swap(7, 8);
        for (i, seq) in seqs.iter().enumerate() {
            s.on_packet(
                *seq,
                i as u32 * 3000,
                100,
                start + Duration::from_millis(33 * i as u64),
            );
        }
        assert_eq!(s.expected(), 16);
        assert_eq!(s.packets, 14);
        assert_eq!(s.lost(), 2);
    }

    #[test]
    fn jitter_is_zero_for_perfect_pacing_and_grows_with_variation() {
        let start = Instant::now();
        let mut steady = RxStream::new(48_000);
        let mut shaky = RxStream::new(48_000);
        for i in 0..200u32 {
            let t = start + Duration::from_millis(20 * u64::from(i));
            steady.on_packet(i as u16, i * 960, 80, t);
            let wobble = Duration::from_millis(if i % 2 == 0 { 0 } else { 10 });
            shaky.on_packet(i as u16, i * 960, 80, t + wobble);
        }
        assert!(steady.jitter_ms() < 0.01, "{}", steady.jitter_ms());
        assert!(shaky.jitter_ms() > 5.0, "{}", shaky.jitter_ms());
        assert_eq!(steady.lost(), 0);
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&mut v, 50.0), Some(50.0));
        assert_eq!(percentile(&mut v, 95.0), Some(95.0));
        assert_eq!(percentile(&mut v, 99.0), Some(99.0));
        assert_eq!(percentile(&mut [], 50.0), None);
        assert_eq!(percentile(&mut [7.0], 99.0), Some(7.0));
    }
}
