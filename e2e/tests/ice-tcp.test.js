// Visits for patients whose network blocks UDP: `bedside serve` with
// `sfu.transports = ["tcp"]` announces only its passive ICE-TCP candidate. Patient and
// clinician in real Chromium see and hear each other over TCP (getStats: the selected pair is
// TCP on both ends). Then every TCP connection to the SFU is cut under the pages (`ss -K`,
// as a network change would): each page restarts ICE by itself, without a reload, and the
// call comes back on a new connection. Firefox ESR reaches the same SFU over TCP too. And on a
// node with both transports, a visit on UDP whose network starts dropping UDP (an nftables
// rule, as a firewall would) moves to ICE-TCP by the page's ICE restart, without a reload.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { startServer } from '../lib/server.js';
import { client } from '../lib/api.js';
import { recordPeerConnections, selectedPair } from '../lib/peers.js';
import { launchFirefox } from '../lib/firefox.js';
import { rawClient } from '../lib/raw-client.js';
import {
  launch, open, assertClean, videoPlaying, hearsAudio, joinReady, armFirstFrame, firstFrameMs,
} from '../lib/browser.js';

let server;
let browser;

before(async () => {
  server = await startServer({ env: { BEDSIDE_SFU__TRANSPORTS: '["tcp"]' } });
  browser = await launch();
});

after(async () => {
  if (browser) await browser.close();
  if (server) await server.stop();
});

/** A page in a fresh context whose peer connections are recorded. */
async function recordedPage() {
  const page = await open(browser);
  await recordPeerConnections(page.context());
  return page;
}

/** `bedside_sfu_tcp_accepts_total{outcome="adopted"}`: connections handed to a worker. */
async function adopted() {
  const text = await (await fetch(`${server.base}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith('bedside_sfu_tcp_accepts_total{outcome="adopted"}'));
  return Number(line?.split(' ').at(-1) ?? 0);
}

/** Frames decoded so far by the page's remote video. */
const frames = (page) => page.evaluate(() => document.querySelector('video.remote-video').getVideoPlaybackQuality().totalVideoFrames);

test('a TCP-only visit connects over ICE-TCP and survives its connections being cut', async () => {
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
  console.log(`ICE-TCP: Join pressed → first remote frame ${Math.round(await firstFrameMs(patient))} ms`);

  await videoPlaying(patient, 'video.remote-video');
  await videoPlaying(doctor, 'video.remote-video');
  await hearsAudio(patient);
  await hearsAudio(doctor);
  const sfuPorts = new Set();
  for (const [who, page] of [['patient', patient], ['clinician', doctor]]) {
    const pair = await selectedPair(page);
    assert.equal(pair.local.protocol, 'tcp', `${who}: ${JSON.stringify(pair)}`);
    assert.equal(pair.remote.protocol, 'tcp', `${who}: ${JSON.stringify(pair)}`);
    assert.equal(pair.remote.candidateType, 'host', `${who}: straight to the SFU`);
    sfuPorts.add(pair.remote.port);
    await page.evaluate(() => { window.__sameDocument = true; });
  }
  assert.equal(sfuPorts.size, 1, 'one ICE-TCP port for the node');
  const [port] = sfuPorts;

  // Cut both pages' connections to the SFU, as a network change would.
  const connected = await adopted();
  assert.ok(connected >= 2, `both pages connected over TCP (${connected})`);
  const killed = execFileSync('ss', ['-K', 'dst', '127.0.0.1', 'dport', '=', String(port)], {
    encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'],
  });
  assert.ok(killed.split('\n').filter((l) => l.startsWith('tcp')).length >= 2, `ss killed both connections:\n${killed}`);
  for (const [who, page] of [['patient', patient], ['clinician', doctor]]) {
    const before = await frames(page);
    await page.waitForFunction(
      (n) => document.querySelector('video.remote-video').getVideoPlaybackQuality().totalVideoFrames > n + 30,
      before,
      { timeout: 30000 },
    );
    assert.equal(await page.evaluate(() => window.__sameDocument), true, `${who}: no reload`);
    const restarted = await page.evaluate(() => window.__peerConnections.at(-1).iceConnectionState);
    assert.ok(['connected', 'completed'].includes(restarted), `${who}: ICE is ${restarted}`);
    const pair = await selectedPair(page);
    assert.equal(pair.local.protocol, 'tcp', `${who} came back over TCP: ${JSON.stringify(pair)}`);
  }
  assert.ok(await adopted() >= connected + 2, 'each page opened a new connection');
  await hearsAudio(patient);
  await hearsAudio(doctor);
  assertClean(patient);
  assertClean(doctor);
  await patient.context().close();
  await doctor.context().close();
});

/** Joins a visit without a waiting room on `base`: the clinician, then the patient. */
async function holdVisit(base, adminKey) {
  const api = client(base);
  const clinician = await api.clinician(adminKey);
  const { links } = await api.visit(adminKey, clinician.id, { waitingRoom: false });
  const doctor = await recordedPage();
  const patient = await recordedPage();
  for (const [page, link] of [[doctor, links.clinician.url], [patient, links.patient.url]]) {
    await page.goto(link);
    await joinReady(page);
    await page.getByRole('button', { name: 'Join' }).click();
    await page.waitForFunction(() => document.body.dataset.state === 'call');
  }
  await videoPlaying(patient, 'video.remote-video');
  await videoPlaying(doctor, 'video.remote-video');
  return { doctor, patient };
}

test('a visit on UDP whose network starts dropping UDP moves to ICE-TCP without a reload', async () => {
  const both = await startServer();
  const table = `bedside_e2e_${process.pid}`;
  const nft = (...args) => execFileSync('nft', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  try {
    const { doctor, patient } = await holdVisit(both.base, both.adminKey);
    const ports = new Set();
    for (const [who, page] of [['patient', patient], ['clinician', doctor]]) {
      const pair = await selectedPair(page);
      assert.equal(pair.remote.protocol, 'udp', `${who} starts on UDP: ${JSON.stringify(pair)}`);
      ports.add(pair.remote.port);
      await page.evaluate(() => { window.__sameDocument = true; });
    }
    nft('add', 'table', 'inet', table);
    nft('add', 'chain', 'inet', table, 'out', '{ type filter hook output priority 0; }');
    for (const port of ports) nft('add', 'rule', 'inet', table, 'out', 'udp', 'dport', String(port), 'drop');
    for (const [who, page] of [['patient', patient], ['clinician', doctor]]) {
      await page.waitForFunction(async () => {
        const pc = window.__peerConnections.at(-1);
        const stats = await pc.getStats();
        const transport = [...stats.values()].find((r) => r.type === 'transport' && r.selectedCandidatePairId);
        const pair = transport && stats.get(transport.selectedCandidatePairId);
        return pair && stats.get(pair.remoteCandidateId)?.protocol === 'tcp' && pc.iceConnectionState === 'connected';
      }, null, { timeout: 30000, polling: 250 });
    }
    // What each page decodes comes from the other's uplink, so frames are counted only once
    // both have moved: the second page's restart can take most of the first one's wait. The
    // estimate of the new path starts over and can dip while it settles, and the SFU may
    // pause the video for bandwidth for some seconds (as designed), hence the 30 s.
    for (const [who, page] of [['patient', patient], ['clinician', doctor]]) {
      const before = await frames(page);
      await page.waitForFunction(
        (n) => document.querySelector('video.remote-video').getVideoPlaybackQuality().totalVideoFrames > n + 30,
        before,
        { timeout: 30000 },
      );
      assert.equal(await page.evaluate(() => window.__sameDocument), true, `${who}: no reload`);
    }
    await hearsAudio(patient);
    await hearsAudio(doctor);
    assertClean(patient);
    assertClean(doctor);
    await patient.context().close();
    await doctor.context().close();
  } finally {
    try { nft('delete', 'table', 'inet', table); } catch { /* never created */ }
    await both.stop();
  }
});

test('Firefox and Chromium clients reach a TCP-only SFU', async () => {
  const api = client(server.base);
  const staff = await api.clinician(server.adminKey);
  const { visit, links } = await api.visit(server.adminKey, staff.id, { waitingRoom: false });
  const starts = await api.start(visit, links, staff.api_key);
  const firefox = await launchFirefox();
  try {
    const patientPage = await firefox.newPage();
    const doctorContext = await browser.newContext();
    const doctorPage = await doctorContext.newPage();
    await Promise.all([patientPage.goto(`${server.base}/healthz`), doctorPage.goto(`${server.base}/healthz`)]);
    const run = (page, start) => page.evaluate(rawClient, {
      signalingUrl: start.media.signaling_url,
      grant: start.grant,
      timeoutMs: 20000,
    });
    const [patient, doctor] = await Promise.all([run(patientPage, starts.patient), run(doctorPage, starts.clinician)]);
    for (const [who, seen] of [['patient (Firefox)', patient], ['clinician (Chromium)', doctor]]) {
      assert.ok(seen.received.frames >= 10 && seen.received.packets >= 20, `${who}: ${JSON.stringify(seen.received)}`);
      assert.equal(seen.selected?.local?.protocol, 'tcp', `${who}: ${JSON.stringify(seen.selected)}`);
      assert.equal(seen.selected?.remote?.protocol, 'tcp', `${who}: ${JSON.stringify(seen.selected)}`);
    }
    await doctorContext.close();
  } finally {
    await firefox.close();
  }
});
