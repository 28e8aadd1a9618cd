// Simulcast in real Chromium: the join page sends its camera as three layers (rids q, h, f:
// quarter, half and full resolution), the SFU forwards each viewer one of them, and the size
// the viewer shows the video at (`video_size`, from a ResizeObserver on the page) decides
// which: a small tile gets the quarter-resolution layer, a large one the full one. What each
// browser sends and receives is read from its RTCPeerConnection's getStats, recorded from the
// test (the product has no hook for it). Firefox, which patients use too, publishes its layers
// the same way.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer } from '../lib/server.js';
import { client } from '../lib/api.js';
import { recordPeerConnections, recordPagePeerConnections } from '../lib/peers.js';
import { launch, open, assertClean, joinReady, videoPlaying } from '../lib/browser.js';
import { launchFirefox } from '../lib/firefox.js';

let browser;

before(async () => {
  browser = await launch();
});

after(async () => {
  if (browser) await browser.close();
});

/** The rids of the page's outbound video layers that are encoding frames, sorted. */
const sentLayers = (page) => page.evaluate(async () => {
  const stats = await window.__peerConnections.at(-1).getStats();
  const before = new Map([...stats.values()]
    .filter((r) => r.type === 'outbound-rtp' && r.kind === 'video' && r.rid)
    .map((r) => [r.rid, r.framesEncoded]));
  await new Promise((resolve) => { setTimeout(resolve, 1000); });
  const after = await window.__peerConnections.at(-1).getStats();
  return [...after.values()]
    .filter((r) => r.type === 'outbound-rtp' && r.kind === 'video' && r.rid)
    .filter((r) => r.framesEncoded > (before.get(r.rid) || 0))
    .map((r) => r.rid)
    .sort();
});

/** The width the `publisher` page encodes its camera layer `rid` at now. */
const layerWidth = (publisher, rid) => publisher.evaluate(async (wanted) => {
  const stats = await window.__peerConnections.at(-1).getStats();
  const layer = [...stats.values()].find((r) => r.type === 'outbound-rtp' && r.kind === 'video' && r.rid === wanted);
  return layer ? layer.frameWidth : null;
}, rid);

/**
 * Waits until `viewer`'s remote camera video has the width of `publisher`'s layer `rid`, or of
 * one of the layers `rid` lists (read afresh each time: Chromium lowers its resolutions by
 * itself when the machine is busy).
 */
async function receivesLayer(viewer, publisher, rid, timeout = 30000) {
  const deadline = Date.now() + timeout;
  const rids = [rid].flat();
  let seen;
  for (;;) {
    const want = await Promise.all(rids.map((r) => layerWidth(publisher, r)));
    seen = await viewer.evaluate(() => document.querySelector('video.remote-video').videoWidth);
    if (want.some((w) => w && seen === w)) return;
    assert.ok(Date.now() < deadline, `the viewer gets layer ${rids} (${want} wide), not ${seen} within ${timeout} ms`);
    await new Promise((resolve) => { setTimeout(resolve, 250); });
  }
}

test('the camera goes out as three layers and each viewer gets the one its tile needs', async () => {
  const server = await startServer();
  try {
    const api = client(server.base);
    const clinician = await api.clinician(server.adminKey);
    const { links } = await api.visit(server.adminKey, clinician.id, { waitingRoom: false });
    const doctor = await open(browser);
    const patient = await open(browser);
    await recordPeerConnections(doctor.context());
    await recordPeerConnections(patient.context());
    for (const [page, link] of [[doctor, links.clinician.url], [patient, links.patient.url]]) {
      await page.goto(link);
      await joinReady(page);
      await page.getByRole('button', { name: 'Join' }).click();
      await page.waitForFunction(() => document.body.dataset.state === 'call');
    }
    await videoPlaying(patient, 'video.remote-video');
    await videoPlaying(doctor, 'video.remote-video');

    // The page asks for 1280x720, which the fake camera gives, so Chromium sends all three
    // once its own estimate of the uplink has grown (it starts low and adds layers).
    for (const [who, page] of [['clinician', doctor], ['patient', patient]]) {
      const deadline = Date.now() + 30000;
      let layers = await sentLayers(page);
      while (layers.join() !== 'f,h,q' && Date.now() < deadline) layers = await sentLayers(page);
      assert.deepEqual(layers, ['f', 'h', 'q'], `the ${who} sends q, h and f`);
    }

    // A desktop tile is wider than the half layer: the full layer, once the SFU's estimate
    // of the loopback link has grown past it.
    await receivesLayer(patient, doctor, 'f');

    // Shown small, the video needs only the quarter-resolution layer.
    await patient.evaluate(() => {
      const video = document.querySelector('video.remote-video');
      video.style.width = '200px';
      video.style.height = '112px';
    });
    await receivesLayer(patient, doctor, 'q', 15000);
    // Frames keep coming after the switch: the decoder took the new layer as one stream.
    await videoPlaying(patient, 'video.remote-video');

    // Large again: back to the full layer.
    await patient.evaluate(() => {
      const video = document.querySelector('video.remote-video');
      video.style.width = '';
      video.style.height = '';
    });
    await receivesLayer(patient, doctor, 'f', 20000);
    await videoPlaying(patient, 'video.remote-video');
    // The clinician, whose tile never changed, saw one stream throughout: a large layer (h
    // when its estimate, on a machine busy with two browsers, does not reach f).
    await receivesLayer(doctor, patient, ['f', 'h']);

    const metrics = await (await fetch(`${server.base}/metrics`)).text();
    const switches = [...metrics.matchAll(/^bedside_sfu_layer_switches_total\{[^}]*\} (\d+)/gm)]
      .reduce((sum, m) => sum + Number(m[1]), 0);
    assert.ok(switches >= 2, `the SFU counted the patient's layer switches: ${switches}`);
    assertClean(patient);
    assertClean(doctor);
    await patient.context().close();
    await doctor.context().close();
  } finally {
    await server.stop();
  }
});

test('a Firefox patient sends its camera as layers too, and both see each other', async () => {
  const server = await startServer();
  const firefox = await launchFirefox();
  try {
    const api = client(server.base);
    const clinician = await api.clinician(server.adminKey);
    const { links } = await api.visit(server.adminKey, clinician.id, { waitingRoom: false });
    const doctor = await open(browser);
    await doctor.goto(links.clinician.url);
    await joinReady(doctor);
    await doctor.getByRole('button', { name: 'Join' }).click();
    await doctor.waitForFunction(() => document.body.dataset.state === 'call');

    const patient = await firefox.newPage();
    await recordPagePeerConnections(patient);
    await patient.goto(links.patient.url);
    await patient.waitForFunction(() => document.querySelector('button.primary.big')?.disabled === false, { timeout: 15000 });
    await patient.click('button.primary.big');
    await patient.waitForFunction(() => document.body.dataset.state === 'call', { timeout: 15000 });

    const playing = (sel) => {
      const v = document.querySelector(sel);
      return !!v && v.videoWidth > 0 && !v.paused && v.currentTime > 1;
    };
    await patient.waitForFunction(playing, { timeout: 30000, polling: 250 }, 'video.remote-video');
    await videoPlaying(doctor, 'video.remote-video', 30000);
    const rids = await patient.evaluate(async () => {
      const stats = await window.__peerConnections.at(-1).getStats();
      return [...stats.values()]
        .filter((r) => r.type === 'outbound-rtp' && r.kind === 'video' && r.rid && r.packetsSent > 0)
        .map((r) => r.rid)
        .sort();
    });
    assert.ok(rids.length >= 2 && rids.includes('q'), `Firefox sends simulcast layers: ${rids}`);
    assertClean(doctor);
    await doctor.context().close();
  } finally {
    await firefox.close();
    await server.stop();
  }
});
