// What a page's RTCPeerConnection really does, read from outside the page: the page keeps its
// connection to itself, so an init script (run before the page's own scripts, outside its CSP)
// records every connection it makes; the tests then read their configuration and getStats.

/** The init script: runs in the page and keeps each RTCPeerConnection in `__peerConnections`. */
function record() {
  const Native = window.RTCPeerConnection;
  window.__peerConnections = [];
  window.RTCPeerConnection = class extends Native {
    constructor(...args) {
      super(...args);
      window.__peerConnections.push(this);
    }
  };
}

/** Records, on every page of `context` from now on, each RTCPeerConnection it creates. */
export async function recordPeerConnections(context) {
  await context.addInitScript(record);
}

/** The configuration of the page's latest RTCPeerConnection (`getConfiguration()`). */
export function peerConfiguration(page) {
  return page.evaluate(() => {
    const pc = window.__peerConnections.at(-1);
    const { iceTransportPolicy, iceServers } = pc.getConfiguration();
    return { iceTransportPolicy, iceServers: iceServers.map(({ urls, username }) => ({ urls, username })) };
  });
}

/**
 * The selected candidate pair of the page's latest RTCPeerConnection once it has one:
 * {local, remote}, each {candidateType, protocol, relayProtocol, address, port}; and the types
 * of every local candidate it gathered.
 */
export async function selectedPair(page, timeout = 15000) {
  const deadline = Date.now() + timeout;
  // Polled from here: waitForFunction takes an async predicate's promise for a truthy answer.
  for (;;) {
    const pair = await page.evaluate(async () => {
      const pc = window.__peerConnections.at(-1);
      if (!pc) return null;
      const stats = await pc.getStats();
      const all = [...stats.values()];
      const transport = all.find((r) => r.type === 'transport' && r.selectedCandidatePairId);
      if (!transport) return null;
      const selected = stats.get(transport.selectedCandidatePairId);
      const pick = (c) => ({
        candidateType: c.candidateType, protocol: c.protocol, relayProtocol: c.relayProtocol, address: c.address, port: c.port,
      });
      return {
        local: pick(stats.get(selected.localCandidateId)),
        remote: pick(stats.get(selected.remoteCandidateId)),
        localTypes: [...new Set(all.filter((r) => r.type === 'local-candidate').map((r) => r.candidateType))],
      };
    });
    if (pair) return pair;
    if (Date.now() > deadline) throw new Error(`no selected candidate pair within ${timeout} ms`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** `recordPeerConnections` for a puppeteer (Firefox) page: from its next navigation on. */
export async function recordPagePeerConnections(page) {
  await page.evaluateOnNewDocument(record);
}
