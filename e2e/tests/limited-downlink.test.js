// A patient on a weak link, in real Chromium: the patient's browser runs in a network
// namespace whose downlink a `tbf` qdisc limits (e2e/lib/netns.js), the clinician's browser
// publishes its 1280x720 camera as three simulcast layers. The patient's getStats (recorded
// from the test) and page show what the issue asks: at 400 kbit/s a lower layer that keeps
// playing, at 100 kbit/s the video paused with the page's notice while the audio goes on, and
// when the limit is lifted the video back up to the top layer. Each phase prints its figures
// (audio loss and concealment, video width and frame rate, freeze time, adapt times) for
// docs/performance.md.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startServer } from '../lib/server.js';
import { client } from '../lib/api.js';
import { recordPeerConnections } from '../lib/peers.js';
import { limitedLink } from '../lib/netns.js';
import {
  launch, open, joinReady, videoPlaying, assertClean, SHOTS,
} from '../lib/browser.js';

let link;
let server;
let doctorBrowser;
let patientBrowser;

before(async () => {
  link = limitedLink();
  server = await startServer({ host: link.hostIp });
  // The pages are served from the veth's address, which is not a secure context by itself.
  const args = [`--unsafely-treat-insecure-origin-as-secure=${server.base}`];
  doctorBrowser = await launch({ args });
  patientBrowser = await launch({ args, executablePath: link.launcher });
});

after(async () => {
  if (patientBrowser) await patientBrowser.close();
  if (doctorBrowser) await doctorBrowser.close();
  if (server) {
    // The server's side of the run (layer changes are logged at debug with
    // BEDSIDE_LOG__LEVEL=warn,bedside=info,sfu=debug), for when a figure surprises.
    mkdirSync(SHOTS, { recursive: true });
    writeFileSync(join(SHOTS, 'limited-downlink-server.log'), server.logs());
    await server.stop();
  }
  if (link) link.remove();
});

/** What the patient's page receives now: remote video and audio counters, the notice. */
const sample = (page) => page.evaluate(async () => {
  const video = document.querySelector('video.remote-video');
  const stats = await window.__peerConnections.at(-1).getStats();
  const inbound = [...stats.values()].filter((r) => r.type === 'inbound-rtp');
  const audio = inbound.filter((r) => r.kind === 'audio');
  const sum = (list, key) => list.reduce((total, r) => total + (r[key] || 0), 0);
  const remote = inbound.filter((r) => r.kind === 'video');
  return {
    at: performance.now(),
    width: video ? video.videoWidth : 0,
    frames: video ? video.getVideoPlaybackQuality().totalVideoFrames : 0,
    freezes: sum(remote, 'totalFreezesDuration'),
    audioReceived: sum(audio, 'packetsReceived'),
    audioLost: sum(audio, 'packetsLost'),
    samples: sum(audio, 'totalSamplesReceived'),
    concealed: sum(audio, 'concealedSamples'),
    paused: Boolean(document.querySelector('.tile.remote .paused-notice:not([hidden])')),
  };
});

/** Figures between two samples. */
function between(a, b) {
  const seconds = (b.at - a.at) / 1000;
  const received = b.audioReceived - a.audioReceived;
  const lost = Math.max(0, b.audioLost - a.audioLost);
  const samples = b.samples - a.samples;
  return {
    seconds,
    audioPackets: received,
    audioLossPct: received + lost > 0 ? (100 * lost) / (received + lost) : 100,
    concealmentPct: samples > 0 ? (100 * (b.concealed - a.concealed)) / samples : 100,
    fps: (b.frames - a.frames) / seconds,
    freezeS: b.freezes - a.freezes,
  };
}

const round = (n) => Math.round(n * 10) / 10;

/**
 * Runs one phase: limits the link to `kbit` (null: none) for `seconds`, sampling the patient
 * every second. Returns the samples, the figures over the phase's `tail` last seconds, and
 * when (seconds into the phase) `until` first held, if given.
 */
async function phase(patient, kbit, seconds, { tail = seconds - 5, until } = {}) {
  link.limit(kbit);
  const started = Date.now();
  const samples = [await sample(patient)];
  let reached = null;
  for (let i = 1; i <= seconds; i += 1) {
    await patient.waitForTimeout(Math.max(0, started + i * 1000 - Date.now()));
    const now = await sample(patient);
    samples.push(now);
    if (reached === null && until && until(now, samples)) reached = (now.at - samples[0].at) / 1000;
  }
  const last = samples.at(-1);
  const start = samples.find((s) => s.at >= last.at - tail * 1000) || samples[0];
  return { samples, tail: between(start, last), reached };
}

test('a patient whose downlink falls to 400 and 100 kbit/s keeps audio, gets a lower layer, then a paused notice, and recovers', async () => {
  const api = client(server.base);
  const clinician = await api.clinician(server.adminKey);
  const { links } = await api.visit(server.adminKey, clinician.id, { waitingRoom: false });
  const doctor = await open(doctorBrowser);
  const patientContext = await patientBrowser.newContext({ viewport: { width: 1280, height: 800 }, permissions: ['camera', 'microphone'] });
  await recordPeerConnections(patientContext);
  const patient = await patientContext.newPage();
  patient.problems = [];
  patient.on('pageerror', (error) => patient.problems.push(`error: ${error.message}`));
  for (const [page, url] of [[doctor, links.clinician.url], [patient, links.patient.url]]) {
    await page.goto(url);
    await joinReady(page);
    await page.getByRole('button', { name: 'Join' }).click();
    await page.waitForFunction(() => document.body.dataset.state === 'call');
  }
  await videoPlaying(patient, 'video.remote-video', 30000);

  const figures = {};
  // Unlimited: the top layer, whatever width Chromium encodes it at on this busy machine.
  const free = await phase(patient, null, 15, { tail: 5 });
  const top = Math.max(...free.samples.map((s) => s.width));
  figures.unlimited = { width: free.samples.at(-1).width, ...free.tail };

  // 400 kbit/s: a lower layer within 20 s, still playing, audio whole.
  const slow = await phase(patient, 400, 30, { tail: 10, until: (s) => s.width > 0 && s.width < top });
  figures['400 kbit/s'] = { downAfterS: slow.reached, width: slow.samples.at(-1).width, ...slow.tail };

  // 100 kbit/s: the video paused for this patient (and the page says so), audio on.
  const starved = await phase(patient, 100, 30, { tail: 15, until: (s) => s.paused });
  figures['100 kbit/s'] = { pausedAfterS: starved.reached, ...starved.tail };

  // Lifted: the video back, then up to the top layer.
  const lifted = await phase(patient, null, 40, {
    tail: 5,
    until: (s, all) => !s.paused && all.length > 1 && s.frames > all.at(-2).frames,
  });
  // The top layer as it was sent at the end of the unlimited phase (Chromium lowers its
  // resolutions by itself when the machine is busy).
  const topAgain = lifted.samples.find((s) => s.width >= free.samples.at(-1).width);
  figures.recovered = {
    videoAfterS: lifted.reached,
    topAfterS: topAgain ? round((topAgain.at - lifted.samples[0].at) / 1000) : null,
    width: lifted.samples.at(-1).width,
    ...lifted.tail,
  };
  for (const [name, values] of Object.entries(figures)) {
    const shown = Object.entries(values).map(([k, v]) => `${k}=${typeof v === 'number' ? round(v) : v}`);
    console.log(`# ${name}: ${shown.join(' ')}`);
  }
  // Second by second (width, frames decoded in that second, P when the notice shows), for
  // when a figure surprises.
  for (const [name, run] of [['unlimited', free], ['400', slow], ['100', starved], ['lifted', lifted]]) {
    const series = run.samples.slice(1).map((s, i) => `${s.width}/${s.frames - run.samples[i].frames}${s.paused ? 'P' : ''}`);
    console.log(`# ${name}: ${series.join(' ')}`);
  }

  // What must hold on any run; the figures above vary with the estimate str0m makes on this
  // busy machine (docs/performance.md has several runs).
  assert.ok(top > 320, `more than the lowest layer arrives unlimited: ${top} wide`);
  assert.ok(slow.reached !== null && slow.reached <= 20, `a lower layer within 20 s at 400 kbit/s: ${slow.reached}`);
  const slowFrames = slow.samples.at(-1).frames - slow.samples[0].frames;
  assert.ok(slowFrames >= 60, `the lower layer keeps playing: ${slowFrames} frames in 30 s`);
  assert.ok(slow.tail.audioLossPct < 5, `audio at 400 kbit/s: ${round(slow.tail.audioLossPct)}% lost`);
  assert.ok(starved.reached !== null && starved.reached <= 15, `paused notice within 15 s at 100 kbit/s: ${starved.reached}`);
  assert.ok(starved.tail.audioPackets >= 500, `audio keeps flowing at 100 kbit/s: ${starved.tail.audioPackets} of 750 packets in 15 s`);
  assert.ok(lifted.reached !== null && lifted.reached <= 25, `video back within 25 s: ${lifted.reached}`);
  const best = Math.max(...lifted.samples.map((s) => s.width));
  assert.ok(best > 320, `climbs above the lowest layer once the limit is lifted (widths ${lifted.samples.map((s) => s.width)})`);
  assert.equal(lifted.samples.at(-1).paused, false);
  assertClean(patient);
  await patientContext.close();
  await doctor.context().close();
});
