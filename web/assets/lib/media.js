// Which kind of call a start answer asks for: Bedside's SFU (Call) or an Amazon Chime SDK
// meeting (ChimeCall, with the SDK bundle loaded first). Both take their seat on Bedside's
// signaling, so the page drives them alike.

import { Call } from './call.js';
import { ChimeCall, loadChime } from './chime.js';

/**
 * Starts the visit with `start()` and builds the call its answer's `media.backend` needs.
 * Resolves `{call, answer}` (then `call.enter(answer)` takes the seat); throws the start
 * problem, or `chime_missing` / `network` / `trouble` when the Chime SDK cannot be loaded.
 */
export async function openCall({ start, stream, devices }) {
  const answer = await start();
  const options = { start, emit: () => {}, stream, devices };
  if (answer.media && answer.media.backend === 'chime') {
    const sdk = await loadChime();
    return { call: new ChimeCall({ ...options, sdk }), answer };
  }
  return { call: new Call(options), answer };
}
