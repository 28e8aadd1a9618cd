// The part of amazon-chime-sdk-js the join page needs for a visit whose start answer has
// `media.backend === "chime"`, bundled by esbuild into dist/amazon-chime-sdk.js (one ES
// module, no third-party request at run time, so the page's strict CSP still holds).

import {
  ConsoleLogger,
  DefaultDeviceController,
  DefaultMeetingSession,
  LogLevel,
  MeetingSessionConfiguration,
} from 'amazon-chime-sdk-js';

export {
  ConsoleLogger,
  DefaultDeviceController,
  DefaultMeetingSession,
  LogLevel,
  MeetingSessionConfiguration,
};

/**
 * A meeting session for the `media` object of a Bedside start answer.
 *
 * `media.meeting` and `media.attendee` are the Chime SDK Meetings API's `Meeting` and
 * `Attendee` objects exactly as the server received them, which is what
 * `MeetingSessionConfiguration` expects.
 *
 * @param {{backend: string, meeting: object, attendee: object}} media the start answer's `media`
 * @param {{logLevel?: number}} [options] `LogLevel.WARN` unless given
 * @returns {DefaultMeetingSession} a session; call `session.audioVideo.start()` to join
 */
export function createMeetingSession(media, options = {}) {
  if (!media || media.backend !== 'chime') {
    throw new Error('not a Chime start answer');
  }
  const logger = new ConsoleLogger('bedside-chime', options.logLevel ?? LogLevel.WARN);
  const devices = new DefaultDeviceController(logger);
  const configuration = new MeetingSessionConfiguration(media.meeting, media.attendee);
  return new DefaultMeetingSession(configuration, logger, devices);
}
