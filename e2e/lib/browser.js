// Debian's chromium through playwright-core, with the flags this machine needs and fake
// camera and microphone; plus the checks the tests share: axe, screenshots, CSP, media.

import { chromium } from 'playwright-core';
import { readFileSync, mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import assert from 'node:assert/strict';

const require = createRequire(import.meta.url);
const AXE = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');
export const SHOTS = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'target', 'e2e');
export const PHONE = { width: 375, height: 812 };
export const DESKTOP = { width: 1280, height: 800 };

/**
 * Chromium with fake devices; `args` adds command-line switches, `executablePath` replaces
 * the binary (a launcher that starts it in a network namespace).
 */
export async function launch({ args = [], executablePath = process.env.CHROMIUM || '/usr/bin/chromium' } = {}) {
  return chromium.launch({
    executablePath,
    headless: true,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream',
      '--allow-loopback-in-peer-connection',
      '--auto-select-desktop-capture-source=Entire screen',
      ...args,
    ],
  });
}

/**
 * A fresh context (its own cookies and storage, like another device) and a page in it that
 * records CSP violations and page errors.
 */
export async function open(browser, viewport = DESKTOP) {
  const context = await browser.newContext({ viewport, permissions: ['camera', 'microphone'] });
  const page = await context.newPage();
  page.problems = [];
  page.on('console', (msg) => {
    if (/Content Security Policy|Refused to/i.test(msg.text())) page.problems.push(`csp: ${msg.text()}`);
  });
  page.on('pageerror', (error) => page.problems.push(`error: ${error.message}`));
  return page;
}

/** No CSP violations or uncaught errors so far on `page`. */
export function assertClean(page) {
  assert.deepEqual(page.problems, [], 'the page stayed within its CSP without errors');
}

/** axe-core on the page as it is now: no serious or critical violations. */
export async function axe(page, state) {
  await page.evaluate(AXE);
  const result = await page.evaluate(() => window.axe.run(document, {
    runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice'] },
  }));
  const bad = result.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  assert.deepEqual(
    bad.map((v) => `${v.id}: ${v.help} (${v.nodes.map((n) => n.target.join(' ')).join(', ')})`),
    [],
    `axe on ${state}`,
  );
}

/** Screenshots of the page at phone and desktop width, then back to its own size. */
export async function shoot(page, name) {
  mkdirSync(SHOTS, { recursive: true });
  const own = page.viewportSize();
  for (const [label, size] of [['375', PHONE], ['1280', DESKTOP]]) {
    await page.setViewportSize(size);
    await page.waitForTimeout(150);
    await page.screenshot({ path: join(SHOTS, `${name}-${label}.png`), fullPage: true });
  }
  await page.setViewportSize(own);
}

/** axe and screenshots for one state. */
export async function capture(page, state) {
  await axe(page, state);
  await shoot(page, state);
}

/** Waits until `selector` is a <video> with frames that keep advancing. */
/** Waits until the preview's Join button exists and is enabled (the page renders it after
 * its redeem answer arrives, so it may not be in the DOM yet when navigation ends). */
export async function joinReady(page, timeout = 10000) {
  await page.waitForFunction(() => document.querySelector('button.primary.big')?.disabled === false, null, { timeout });
}

export async function videoPlaying(page, selector, timeout = 15000) {
  await page.waitForFunction((sel) => {
    const v = document.querySelector(sel);
    return v && v.videoWidth > 0 && v.getVideoPlaybackQuality().totalVideoFrames > 2;
  }, selector, { timeout });
  const frames = () => page.evaluate((sel) => document.querySelector(sel).getVideoPlaybackQuality().totalVideoFrames, selector);
  const before = await frames();
  await page.waitForFunction(([sel, n]) => document.querySelector(sel).getVideoPlaybackQuality().totalVideoFrames > n + 5,
    [selector, before], { timeout });
}

/** Waits until the remote audio level meter has shown sound (Chromium's fake mic beeps). */
export async function hearsAudio(page, timeout = 15000) {
  await page.waitForFunction(() => {
    const el = document.querySelector('.tile.remote .speaking');
    return el && Number(el.dataset.level) > 0.05;
  }, null, { timeout, polling: 20 });
}

/**
 * Arms a timer on the page: from the next click on Join to the first frame presented by the
 * remote <video>. Read it with `firstFrameMs`.
 */
export async function armFirstFrame(page) {
  await page.evaluate(() => {
    window.__joinAt = null;
    window.__firstFrameAt = null;
    document.addEventListener('click', (event) => {
      if (event.target.closest('button') && event.target.closest('button').textContent.trim() === 'Join') {
        window.__joinAt = performance.now();
        const watch = setInterval(() => {
          const video = document.querySelector('video.remote-video');
          if (video && video.srcObject) {
            clearInterval(watch);
            video.requestVideoFrameCallback(() => { window.__firstFrameAt = performance.now(); });
          }
        }, 2);
      }
    }, { capture: true });
  });
}

export async function firstFrameMs(page, timeout = 20000) {
  await page.waitForFunction(() => window.__firstFrameAt !== null, null, { timeout, polling: 10 });
  return page.evaluate(() => window.__firstFrameAt - window.__joinAt);
}
