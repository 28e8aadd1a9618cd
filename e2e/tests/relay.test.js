// Relay-only visits in real Chromium: `bedside serve` with `turn.policy = "relay"` and a real
// coturn on loopback (lib/coturn.js, configured by docs/turnserver.conf). For each TURN
// transport — UDP, TCP, and TLS with a certificate made for the test (Chromium checks it:
// --ignore-certificate-errors-spki-list trusts that one key and nothing else) — the server
// hands out only that URL; patient and clinician see and hear each other, both pages'
// connections were built with iceTransportPolicy "relay", gathered nothing but relay
// candidates, and their selected pair's local candidate is a coturn relay reached over that
// transport. A bad `turn.policy` stops the server with the key named.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer } from '../lib/server.js';
import { client } from '../lib/api.js';
import { startCoturn, turnserverBinary } from '../lib/coturn.js';
import { recordPeerConnections, peerConfiguration, selectedPair } from '../lib/peers.js';
import {
  launch, open, assertClean, videoPlaying, hearsAudio, joinReady, armFirstFrame, firstFrameMs,
} from '../lib/browser.js';

const skip = turnserverBinary() === null ? 'needs coturn (./scripts/test installs it)' : false;
let coturn;
let browser;

before(async () => {
  if (skip) return;
  coturn = await startCoturn();
  browser = await launch({ args: [`--ignore-certificate-errors-spki-list=${coturn.spki}`] });
});

after(async () => {
  if (browser) await browser.close();
  if (coturn) await coturn.stop();
});

/** A page in a fresh context whose peer connections are recorded. */
async function recordedPage() {
  const page = await open(browser);
  await recordPeerConnections(page.context());
  return page;
}

for (const transport of ['udp', 'tcp', 'tls']) {
  test(`a relay-only visit through coturn over TURN/${transport}`, { skip }, async () => {
    const server = await startServer({
      env: {
        BEDSIDE_TURN__URLS: JSON.stringify([coturn.urls[transport]]),
        BEDSIDE_TURN__SHARED_SECRET: coturn.secret,
        BEDSIDE_TURN__POLICY: 'relay',
      },
    });
    try {
      const api = client(server.base);
      const clinician = await api.clinician(server.adminKey);
      const { links } = await api.visit(server.adminKey, clinician.id, { waitingRoom: false });
      const doctor = await recordedPage();
      const patient = await recordedPage();
      await doctor.goto(links.clinician.url);
      await joinReady(doctor);
      await doctor.getByRole('button', { name: 'Join' }).click();
      await doctor.waitForFunction(() => document.body.dataset.state === 'call');
      await patient.goto(links.patient.url);
      await joinReady(patient);
      await armFirstFrame(patient);
      await patient.getByRole('button', { name: 'Join' }).click();
      const joinMs = await firstFrameMs(patient);
      console.log(`relay over TURN/${transport}: Join pressed → first remote frame ${Math.round(joinMs)} ms`);

      await videoPlaying(patient, 'video.remote-video');
      await videoPlaying(doctor, 'video.remote-video');
      await hearsAudio(patient);
      await hearsAudio(doctor);
      const log = coturn.log();
      for (const [who, page] of [['patient', patient], ['clinician', doctor]]) {
        const config = await peerConfiguration(page);
        assert.equal(config.iceTransportPolicy, 'relay', `${who}: the page obeys the start answer`);
        assert.deepEqual(config.iceServers.map((s) => s.urls), [[coturn.urls[transport]]], who);
        const pair = await selectedPair(page);
        assert.deepEqual(pair.localTypes, ['relay'], `${who} gathered relay candidates only`);
        assert.equal(pair.local.candidateType, 'relay', `${who}: ${JSON.stringify(pair)}`);
        assert.equal(pair.local.relayProtocol, transport, `${who} reaches coturn over ${transport}`);
        assert.ok(pair.local.port >= coturn.relayPorts[0] && pair.local.port <= coturn.relayPorts[1],
          `${who}'s relay address is one of coturn's: ${JSON.stringify(pair.local)}`);
        assert.equal(pair.remote.candidateType, 'host', `${who}: the far end is the SFU`);
        const { username } = config.iceServers[0];
        assert.ok(log.split('\n').some((l) => l.includes(username) && l.includes('ALLOCATE processed, success')),
          `coturn allocated for the ${who} (${username})`);
      }
      assertClean(patient);
      assertClean(doctor);
      await patient.context().close();
      await doctor.context().close();
    } finally {
      await server.stop();
    }
  });
}

test('a grant refresh hands fresh TURN credentials to the live connection', { skip }, async () => {
  // Grants live 30 s (the least allowed), so the page refreshes after about 21 s.
  const server = await startServer({
    env: {
      BEDSIDE_TURN__URLS: JSON.stringify([coturn.urls.udp]),
      BEDSIDE_TURN__SHARED_SECRET: coturn.secret,
      BEDSIDE_TURN__POLICY: 'relay',
      BEDSIDE_TOKENS__GRANT_TTL_SECONDS: '30',
    },
  });
  try {
    const api = client(server.base);
    const clinician = await api.clinician(server.adminKey);
    const { links } = await api.visit(server.adminKey, clinician.id, { waitingRoom: false });
    const doctor = await recordedPage();
    await doctor.goto(links.clinician.url);
    await joinReady(doctor);
    await doctor.getByRole('button', { name: 'Join' }).click();
    await selectedPair(doctor);
    const before = (await peerConfiguration(doctor)).iceServers[0].username;
    await doctor.waitForFunction(
      (old) => window.__peerConnections.at(-1).getConfiguration().iceServers[0].username !== old,
      before,
      { timeout: 40000, polling: 250 },
    );
    const after = await peerConfiguration(doctor);
    assert.equal(after.iceTransportPolicy, 'relay');
    const expiry = (username) => Number(username.split(':')[0]);
    assert.ok(expiry(after.iceServers[0].username) > expiry(before), `${before} → ${after.iceServers[0].username}`);
    assert.deepEqual(
      await doctor.evaluate(() => [window.__peerConnections.length, window.__peerConnections[0].connectionState]),
      [1, 'connected'],
      'the same connection, still up',
    );
    assertClean(doctor);
    await doctor.context().close();
  } finally {
    await server.stop();
  }
});

test('a bad turn.policy stops the server with the key named', async () => {
  await assert.rejects(
    startServer({ env: { BEDSIDE_TURN__POLICY: 'sometimes' } }),
    /invalid configuration: turn\.policy: unknown variant: found `sometimes`, expected `+all` or `relay`+/,
  );
});
