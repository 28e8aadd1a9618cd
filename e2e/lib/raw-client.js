// A WebRTC client written from docs/signaling.md alone, the way an integrator would: a canvas
// and an oscillator as camera and microphone, added with `addTrack` (so its m-lines are
// `sendrecv`), the initial offer in `join`, every server offer answered. It runs inside a page
// (Chromium or Firefox) through `evaluate`, so it depends on nothing but the browser.

/**
 * Joins with `grant` at `signalingUrl` and waits (at most `timeoutMs`) until another
 * participant's video decodes frames. Resolves with what the client saw: its own mids and
 * their current directions, the direction the server's answer gave each own mid, every
 * remote track (`mid`, `kind`), the frames and packets received, and the selected candidate
 * pair (`{local, remote}`, each `{candidateType, protocol}`).
 */
export async function rawClient({ signalingUrl, grant, timeoutMs }) {
  const canvas = document.createElement('canvas');
  canvas.width = 320;
  canvas.height = 240;
  const paint = canvas.getContext('2d');
  const painter = setInterval(() => {
    paint.fillStyle = `hsl(${(performance.now() / 10) % 360}, 60%, 50%)`;
    paint.fillRect(0, 0, canvas.width, canvas.height);
  }, 33);
  const audio = new AudioContext();
  const tone = audio.createOscillator();
  const sink = audio.createMediaStreamDestination();
  tone.connect(sink);
  tone.start();
  const stream = new MediaStream([sink.stream.getAudioTracks()[0], canvas.captureStream(30).getVideoTracks()[0]]);

  const pc = new RTCPeerConnection();
  const own = stream.getTracks().map((track) => pc.addTrack(track, stream));
  const remote = [];
  pc.addEventListener('track', (event) => remote.push({ mid: event.transceiver.mid, kind: event.track.kind }));
  await pc.setLocalDescription(await pc.createOffer());

  const ws = new WebSocket(signalingUrl);
  await new Promise((resolve, reject) => {
    ws.onopen = resolve;
    ws.onerror = () => reject(new Error('signaling socket failed'));
  });
  let firstAnswer = null;
  let queue = Promise.resolve();
  const problems = [];
  ws.onmessage = (frame) => {
    queue = queue.then(async () => {
      const message = JSON.parse(frame.data);
      if (message.type === 'answer') {
        firstAnswer ??= message.sdp;
        await pc.setRemoteDescription({ type: 'answer', sdp: message.sdp });
      } else if (message.type === 'offer') {
        await pc.setRemoteDescription({ type: 'offer', sdp: message.sdp });
        await pc.setLocalDescription(await pc.createAnswer());
        ws.send(JSON.stringify({ type: 'answer', sdp: pc.localDescription.sdp }));
      } else if (message.type === 'error') {
        problems.push(message.code);
      }
    }).catch((error) => problems.push(String(error)));
  };
  ws.send(JSON.stringify({ type: 'join', grant, offer: pc.localDescription.sdp }));

  const received = async () => {
    const stats = await pc.getStats();
    const inbound = [...stats.values()].filter((s) => s.type === 'inbound-rtp');
    return {
      frames: inbound.filter((s) => s.kind === 'video').reduce((n, s) => n + (s.framesDecoded || 0), 0),
      packets: inbound.filter((s) => s.kind === 'audio').reduce((n, s) => n + (s.packetsReceived || 0), 0),
    };
  };
  const until = performance.now() + timeoutMs;
  let seen = await received();
  while ((seen.frames < 10 || seen.packets < 20) && performance.now() < until) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    seen = await received();
  }
  const directionIn = (sdp, mid) => {
    const section = (sdp || '').split(/\r\nm=/).find((s) => s.split('\r\n').includes(`a=mid:${mid}`));
    return section?.split('\r\n').find((l) => /^a=(sendrecv|sendonly|recvonly|inactive)$/.test(l))?.slice(2) ?? null;
  };
  // Chromium names the pair on its transport, Firefox marks it `selected`.
  const stats = await pc.getStats();
  const all = [...stats.values()];
  const transport = all.find((r) => r.type === 'transport' && r.selectedCandidatePairId);
  const pair = transport
    ? stats.get(transport.selectedCandidatePairId)
    : all.find((r) => r.type === 'candidate-pair' && r.selected);
  const pick = (id) => {
    const c = stats.get(id);
    return c ? { candidateType: c.candidateType, protocol: c.protocol } : null;
  };
  const ownMids = own.map((sender) => pc.getTransceivers().find((t) => t.sender === sender).mid);
  const result = {
    ownMids,
    ownDirections: pc.getTransceivers().filter((t) => ownMids.includes(t.mid)).map((t) => t.currentDirection),
    answeredDirections: ownMids.map((mid) => directionIn(firstAnswer, mid)),
    remote,
    received: seen,
    selected: pair ? { local: pick(pair.localCandidateId), remote: pick(pair.remoteCandidateId) } : null,
    problems,
  };
  window.rawClient = { pc, ws, painter, tone };
  return result;
}
