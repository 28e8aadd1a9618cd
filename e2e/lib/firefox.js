// Debian's firefox-esr through puppeteer-core over WebDriver BiDi, with fake camera and
// microphone and the prefs Firefox needs to gather loopback candidates. Patients use Firefox
// too, so every change to what the page's WebRTC meets runs here as well as in Chromium.

import puppeteer from 'puppeteer-core';

/** Firefox prefs: fake devices without a prompt, and ICE on 127.0.0.1 with real addresses. */
const PREFS = {
  'media.navigator.streams.fake': true,
  'media.navigator.permission.disabled': true,
  'permissions.default.camera': 1,
  'permissions.default.microphone': 1,
  // Without these Firefox gathers no loopback candidate, so no visit on 127.0.0.1 connects.
  'media.peerconnection.ice.loopback': true,
  'media.peerconnection.ice.obfuscate_host_addresses': false,
};

/** Firefox ESR (headless); `prefs` adds to the defaults above. */
export function launchFirefox({ prefs = {} } = {}) {
  return puppeteer.launch({
    browser: 'firefox',
    executablePath: process.env.FIREFOX || '/usr/bin/firefox-esr',
    headless: true,
    extraPrefsFirefox: { ...PREFS, ...prefs },
  });
}
