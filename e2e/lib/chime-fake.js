// A fake of the Amazon Chime SDK Meetings REST API for the browser tests of Chime visits:
// `POST /meetings` (idempotent on ClientRequestToken), `POST /meetings/{id}/attendees`
// (idempotent on ExternalUserId: the same attendee and JoinToken again),
// `DELETE /meetings/{id}/attendees/{attendeeId}` and `DELETE /meetings/{id}` (204, or 404
// NotFoundException), with the JSON shapes of the AWS API reference. `bedside serve` reaches it through `chime.endpoint_url`; the media placement
// URLs it hands out name *.chime.aws hosts that the test browser resolves to nothing, so the
// Chime SDK's attempts can be watched without anything leaving the machine.

import { createServer } from 'node:http';
import { randomUUID, randomBytes } from 'node:crypto';

function placement(id) {
  const host = `${id.slice(0, 8)}.m2.ue1.app.chime.aws`;
  return {
    AudioHostUrl: `${host}:3478`,
    AudioFallbackUrl: `wss://haxrp.${host}:443/calls/${id}`,
    SignalingUrl: `wss://signal.${host}/control/${id}`,
    TurnControlUrl: 'https://2713.cell.us-east-1.meetings.chime.aws/v2/turn_sessions',
    ScreenDataUrl: `wss://bitpw.${host}:443/v2/screen/${id}`,
    ScreenViewingUrl: `wss://bitpw.${host}:443/ws/connect?passcode=null&viewer_uuid=null&X-BitHub-Call-Id=${id}`,
    ScreenSharingUrl: `wss://bitpw.${host}:443/v2/screen/${id}`,
    EventIngestionUrl: 'https://data.svc.ue1.ingest.chime.aws/v1/client-events',
  };
}

/** Starts the fake on 127.0.0.1: {url, meetings, calls, stop()}. */
export async function startChimeFake() {
  const meetings = new Map();
  const byToken = new Map();
  const calls = [];
  const send = (res, status, body) => {
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(body === undefined ? '' : JSON.stringify(body));
  };
  const notFound = (res) => {
    res.setHeader('x-amzn-errortype', 'NotFoundException');
    send(res, 404, { Code: 'NotFoundException', Message: 'The requested resource does not exist.', RequestId: randomUUID() });
  };
  const server = createServer((req, res) => {
    let raw = '';
    req.on('data', (chunk) => { raw += chunk; });
    req.on('end', () => {
      let body = {};
      try { body = raw ? JSON.parse(raw) : {}; } catch { body = {}; }
      const path = new URL(req.url, 'http://fake').pathname;
      const attendees = path.match(/^\/meetings\/([^/]+)\/attendees$/);
      const attendeePath = path.match(/^\/meetings\/([^/]+)\/attendees\/([^/]+)$/);
      const meetingPath = path.match(/^\/meetings\/([^/]+)$/);
      if (req.method === 'POST' && path === '/meetings') {
        calls.push({ operation: 'CreateMeeting', body });
        let id = byToken.get(body.ClientRequestToken);
        if (!id) {
          id = randomUUID();
          byToken.set(body.ClientRequestToken, id);
          meetings.set(id, {
            MeetingId: id,
            ExternalMeetingId: body.ExternalMeetingId,
            MediaRegion: body.MediaRegion,
            MediaPlacement: placement(id),
            MeetingArn: `arn:aws:chime:us-east-1:123456789012:meeting/${id}`,
            attendees: new Map(),
          });
        }
        const { attendees: _, ...meeting } = meetings.get(id);
        send(res, 200, { Meeting: meeting });
      } else if (req.method === 'POST' && attendees) {
        calls.push({ operation: 'CreateAttendee', meeting: attendees[1], body });
        const meeting = meetings.get(attendees[1]);
        if (!meeting) return notFound(res);
        if (!meeting.attendees.has(body.ExternalUserId)) {
          meeting.attendees.set(body.ExternalUserId, {
            AttendeeId: randomUUID(),
            ExternalUserId: body.ExternalUserId,
            JoinToken: randomBytes(24).toString('base64url'),
          });
        }
        send(res, 200, { Attendee: meeting.attendees.get(body.ExternalUserId) });
      } else if (req.method === 'DELETE' && attendeePath) {
        const [, meetingId, attendeeId] = attendeePath;
        calls.push({ operation: 'DeleteAttendee', meeting: meetingId, attendee: attendeeId });
        const meeting = meetings.get(meetingId);
        if (!meeting) return notFound(res);
        const entry = [...meeting.attendees].find(([, a]) => a.AttendeeId === attendeeId);
        if (!entry) return notFound(res);
        meeting.attendees.delete(entry[0]);
        send(res, 204);
      } else if (req.method === 'DELETE' && meetingPath) {
        calls.push({ operation: 'DeleteMeeting', meeting: meetingPath[1] });
        if (!meetings.delete(meetingPath[1])) return notFound(res);
        send(res, 204);
      } else {
        notFound(res);
      }
      return undefined;
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    meetings,
    calls,
    stop: () => new Promise((resolve) => server.close(resolve)),
  };
}
