// The active speaker in real Chromium: the clinician's browser "speaks" (its fake microphone
// plays a continuous tone from a WAV file), the patient's is silent. Chromium writes each
// audio packet's level in the RFC 6464 extension; the SFU decides who speaks and signaling
// sends `active_speaker` to both pages. The patient's page shows "Speaking" on the clinician's
// tile, the clinician's on its own; muting the tone clears both after the server's 1.5 s of
// silence, and unmuting brings it back.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startServer } from '../lib/server.js';
import { client } from '../lib/api.js';
import { launch, open, assertClean, joinReady, videoPlaying } from '../lib/browser.js';

/** 16-bit mono PCM WAV at 48 kHz, `seconds` long, of a sine at `hz` and `amplitude` (0–1). */
function wav(seconds, hz, amplitude) {
  const rate = 48000;
  const samples = seconds * rate;
  const data = Buffer.alloc(samples * 2);
  for (let i = 0; i < samples; i += 1) {
    data.writeInt16LE(Math.round(amplitude * 32767 * Math.sin((2 * Math.PI * hz * i) / rate)), i * 2);
  }
  const header = Buffer.alloc(44);
  header.write('RIFF', 0);
  header.writeUInt32LE(36 + data.length, 4);
  header.write('WAVE', 8);
  header.write('fmt ', 12);
  header.writeUInt32LE(16, 16);
  header.writeUInt16LE(1, 20);
  header.writeUInt16LE(1, 22);
  header.writeUInt32LE(rate, 24);
  header.writeUInt32LE(rate * 2, 28);
  header.writeUInt16LE(2, 32);
  header.writeUInt16LE(16, 34);
  header.write('data', 36);
  header.writeUInt32LE(data.length, 40);
  return Buffer.concat([header, data]);
}

let dir;
let talking;
let silent;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'bedside-speaker-'));
  writeFileSync(join(dir, 'tone.wav'), wav(2, 440, 0.5));
  writeFileSync(join(dir, 'silence.wav'), wav(2, 440, 0));
  const audio = (file) => [`--use-file-for-fake-audio-capture=${join(dir, file)}`];
  talking = await launch({ args: audio('tone.wav') });
  silent = await launch({ args: audio('silence.wav') });
});

after(async () => {
  if (talking) await talking.close();
  if (silent) await silent.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** Which of a page's tiles show the "Speaking" badge: `self`, `remote`, both or none. */
const speaking = (page) => page.evaluate(() => ['self', 'remote']
  .filter((tile) => !document.querySelector(`.tile.${tile} .is-speaking`).hidden));

test('the page shows who is speaking, from the audio levels the SFU hears', async () => {
  const server = await startServer();
  try {
    const api = client(server.base);
    const clinician = await api.clinician(server.adminKey);
    const { links } = await api.visit(server.adminKey, clinician.id, { waitingRoom: false });
    const doctor = await open(talking);
    const patient = await open(silent);
    await doctor.goto(links.clinician.url);
    await joinReady(doctor);
    await doctor.getByRole('button', { name: 'Join' }).click();
    await doctor.waitForFunction(() => document.body.dataset.state === 'call');
    await patient.goto(links.patient.url);
    await joinReady(patient);
    await patient.getByRole('button', { name: 'Join' }).click();
    await videoPlaying(patient, 'video.remote-video');

    const badge = (page, tile) => page.locator(`.tile.${tile} .is-speaking`);
    await badge(patient, 'remote').waitFor({ state: 'visible', timeout: 10000 });
    await badge(doctor, 'self').waitFor({ state: 'visible', timeout: 10000 });
    assert.deepEqual(await speaking(patient), ['remote'], 'the patient sees the clinician speak');
    assert.deepEqual(await speaking(doctor), ['self'], 'the clinician sees itself speak');
    assert.equal(await badge(patient, 'remote').textContent(), 'Speaking');

    // A muted microphone sends silence: the server clears the speaker after 1.5 s of it.
    await doctor.getByRole('button', { name: 'Mute' }).click();
    await badge(patient, 'remote').waitFor({ state: 'hidden', timeout: 10000 });
    await badge(doctor, 'self').waitFor({ state: 'hidden', timeout: 10000 });
    assert.deepEqual(await speaking(patient), [], 'nobody speaks while the only voice is muted');
    await doctor.getByRole('button', { name: 'Unmute' }).click();
    await badge(patient, 'remote').waitFor({ state: 'visible', timeout: 10000 });

    assertClean(patient);
    assertClean(doctor);
    await patient.context().close();
    await doctor.context().close();
  } finally {
    await server.stop();
  }
});
