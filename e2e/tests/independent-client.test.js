// An independent client, written from docs/signaling.md alone, in both browsers patients use:
// the patient in Firefox ESR (puppeteer-core over WebDriver BiDi), the clinician in Chromium.
// Each offers its camera and microphone `sendrecv`, as `addTrack` does. The server sends
// nothing on a client's own m-lines, so it must answer them `recvonly` (docs/signaling.md §4):
// each side then gets exactly the other's audio and video as remote tracks, and no track that
// never gets a frame. The SFU announces UDP and ICE-TCP; both browsers choose UDP.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer } from '../lib/server.js';
import { client } from '../lib/api.js';
import { launch } from '../lib/browser.js';
import { launchFirefox } from '../lib/firefox.js';
import { rawClient } from '../lib/raw-client.js';

let server;
let api;
let chromium;
let firefox;

before(async () => {
  server = await startServer();
  api = client(server.base);
  [chromium, firefox] = await Promise.all([launch(), launchFirefox()]);
});

after(async () => {
  await Promise.all([chromium?.close(), firefox?.close()]);
  if (server) await server.stop();
});

test('a client offering sendrecv gets recvonly on its own lines and only real remote tracks', async () => {
  const staff = await api.clinician(server.adminKey);
  const { visit, links } = await api.visit(server.adminKey, staff.id, { waitingRoom: false });
  const starts = await api.start(visit, links, staff.api_key);

  const patientPage = await firefox.newPage();
  const doctorContext = await chromium.newContext();
  const doctorPage = await doctorContext.newPage();
  await Promise.all([patientPage.goto(`${server.base}/healthz`), doctorPage.goto(`${server.base}/healthz`)]);
  const run = (page, start) => page.evaluate(rawClient, {
    signalingUrl: start.media.signaling_url,
    grant: start.grant,
    timeoutMs: 20000,
  });
  const [patient, doctor] = await Promise.all([run(patientPage, starts.patient), run(doctorPage, starts.clinician)]);

  for (const [who, seen] of [['patient (Firefox)', patient], ['clinician (Chromium)', doctor]]) {
    assert.deepEqual(seen.problems, [], `${who}: no error frames`);
    assert.deepEqual(seen.answeredDirections, ['recvonly', 'recvonly'], `${who}: the answer on its own m-lines`);
    assert.deepEqual(seen.ownDirections, ['sendonly', 'sendonly'], `${who}: its own transceivers only send`);
    assert.ok(seen.remote.every((t) => !seen.ownMids.includes(t.mid)), `${who}: no remote track on its own m-lines: ${JSON.stringify(seen)}`);
    assert.deepEqual(seen.remote.map((t) => t.kind).sort(), ['audio', 'video'], `${who}: exactly the other's audio and video`);
    assert.ok(seen.received.frames >= 10, `${who}: decoded ${seen.received.frames} video frames`);
    assert.ok(seen.received.packets >= 20, `${who}: received ${seen.received.packets} audio packets`);
    // The SFU announces UDP and ICE-TCP; with both open the browser takes UDP.
    assert.equal(seen.selected?.remote?.protocol, 'udp', `${who}: ${JSON.stringify(seen.selected)}`);
  }
  await patientPage.close();
  await doctorContext.close();
});
