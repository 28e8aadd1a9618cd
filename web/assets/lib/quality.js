// Connection quality from the peer connection's statistics: round-trip time of the active
// candidate pair and the share of incoming packets lost since the last look.

/** Takes a reading; pass the previous one back in to measure loss over the interval. */
export async function readQuality(pc, previous) {
  let rtt = null;
  let received = 0;
  let lost = 0;
  const stats = await pc.getStats();
  stats.forEach((report) => {
    if (report.type === 'candidate-pair' && report.nominated && report.state === 'succeeded'
        && typeof report.currentRoundTripTime === 'number') {
      rtt = report.currentRoundTripTime;
    }
    if (report.type === 'inbound-rtp') {
      received += report.packetsReceived || 0;
      lost += Math.max(0, report.packetsLost || 0);
    }
  });
  const dReceived = received - (previous ? previous.received : 0);
  const dLost = lost - (previous ? previous.lost : 0);
  const loss = dReceived + dLost > 0 ? dLost / (dReceived + dLost) : 0;
  let level = 'good';
  if ((rtt !== null && rtt > 0.6) || loss > 0.08) level = 'poor';
  else if ((rtt !== null && rtt > 0.3) || loss > 0.02) level = 'fair';
  return { level, rtt, loss, received, lost };
}

/** Words for a quality level, shown and read out. */
export const QUALITY_WORDS = {
  good: 'Good connection',
  fair: 'Fair connection',
  poor: 'Weak connection',
  reconnecting: 'Reconnecting…',
};
