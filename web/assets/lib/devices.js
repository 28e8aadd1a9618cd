// Cameras, microphones, speakers, and the microphone level meter.

/** What this browser lacks for a video visit (empty when it has everything). */
export function missingSupport() {
  const missing = [];
  if (!window.isSecureContext) missing.push('a secure (https) connection');
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) missing.push('camera and microphone access');
  if (!window.RTCPeerConnection) missing.push('video calling (WebRTC)');
  if (!window.WebSocket) missing.push('live connections (WebSocket)');
  return missing;
}

/** Whether the browser can send audio to a chosen speaker. */
export const canPickSpeaker = () => 'setSinkId' in HTMLMediaElement.prototype;

/** Whether the browser can share a screen (phones cannot). */
export const canShareScreen = () => !!(navigator.mediaDevices && navigator.mediaDevices.getDisplayMedia);

const VIDEO = { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 30 } };

/**
 * Opens camera and microphone, falling back to what exists. Returns {stream, problem}:
 * problem is null, 'denied', 'no-camera', 'no-microphone', 'no-devices', 'in-use' or 'other'.
 */
export async function openDevices({ camera, microphone } = {}) {
  const audio = microphone ? { deviceId: { exact: microphone } } : true;
  const video = camera ? { ...VIDEO, deviceId: { exact: camera } } : VIDEO;
  try {
    return { stream: await navigator.mediaDevices.getUserMedia({ audio, video }), problem: null };
  } catch (error) {
    const name = error && error.name;
    if (name === 'NotAllowedError' || name === 'SecurityError') return { stream: null, problem: 'denied' };
    if (name === 'NotReadableError' || name === 'AbortError') return { stream: null, problem: 'in-use' };
    if (name !== 'NotFoundError' && name !== 'OverconstrainedError') return { stream: null, problem: 'other' };
  }
  // One of the two is missing (or the remembered one is gone): try each alone.
  for (const [constraints, problem] of [[{ audio: true }, 'no-camera'], [{ video: VIDEO }, 'no-microphone']]) {
    try {
      return { stream: await navigator.mediaDevices.getUserMedia(constraints), problem };
    } catch (error) {
      if (error && error.name === 'NotAllowedError') return { stream: null, problem: 'denied' };
    }
  }
  return { stream: null, problem: 'no-devices' };
}

/** A single new track of `kind` from device `deviceId`. */
export async function openTrack(kind, deviceId) {
  const exact = deviceId ? { deviceId: { exact: deviceId } } : {};
  const constraints = kind === 'video' ? { video: { ...VIDEO, ...exact } } : { audio: deviceId ? exact : true };
  const stream = await navigator.mediaDevices.getUserMedia(constraints);
  return kind === 'video' ? stream.getVideoTracks()[0] : stream.getAudioTracks()[0];
}

/** The devices by kind: {videoinput: [...], audioinput: [...], audiooutput: [...]}. */
export async function listDevices() {
  const lists = { videoinput: [], audioinput: [], audiooutput: [] };
  try {
    for (const device of await navigator.mediaDevices.enumerateDevices()) {
      if (lists[device.kind] && device.deviceId) lists[device.kind].push(device);
    }
  } catch {
    // No list is a usable answer: the selectors stay hidden.
  }
  return lists;
}

let sharedContext = null;

/** One AudioContext for the page; resumed on the next click if the browser started it paused. */
export function audioContext() {
  if (!sharedContext) {
    const Context = window.AudioContext || window.webkitAudioContext;
    if (!Context) return null;
    sharedContext = new Context();
    const resume = () => sharedContext.resume().catch(() => {});
    document.addEventListener('click', resume, { capture: true });
    document.addEventListener('keydown', resume, { capture: true });
  }
  return sharedContext;
}

/**
 * Calls `onLevel(level)` (0–1) about 15 times a second with the loudness of `track`.
 * Returns a function that stops it.
 */
export function watchLevel(track, onLevel) {
  const context = audioContext();
  if (!context || !track) return () => {};
  const source = context.createMediaStreamSource(new MediaStream([track]));
  const analyser = context.createAnalyser();
  analyser.fftSize = 512;
  source.connect(analyser);
  const samples = new Float32Array(analyser.fftSize);
  const timer = setInterval(() => {
    analyser.getFloatTimeDomainData(samples);
    let sum = 0;
    for (const s of samples) sum += s * s;
    const rms = Math.sqrt(sum / samples.length);
    // Speech sits around 0.02–0.2 RMS; a square-root curve makes quiet voices visible.
    onLevel(Math.min(1, Math.sqrt(rms * 4)));
  }, 66);
  return () => {
    clearInterval(timer);
    source.disconnect();
  };
}

/** Fills a <select> with devices, keeping `selected` chosen. */
export function fillSelect(select, devices, selected, fallbackLabel) {
  select.replaceChildren();
  devices.forEach((device, index) => {
    const option = document.createElement('option');
    option.value = device.deviceId;
    option.textContent = device.label || `${fallbackLabel} ${index + 1}`;
    if (device.deviceId === selected) option.selected = true;
    select.append(option);
  });
}

/** Remembers the chosen devices for this tab (device ids only; nothing about the person). */
export function rememberDevices(choice) {
  try { sessionStorage.setItem('bedside.devices', JSON.stringify(choice)); } catch { /* private mode */ }
}

/** The devices chosen earlier in this tab, if any. */
export function rememberedDevices() {
  try { return JSON.parse(sessionStorage.getItem('bedside.devices') || '{}'); } catch { return {}; }
}
