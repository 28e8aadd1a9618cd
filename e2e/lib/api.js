// REST calls that set up visits for the browser tests.

export function client(base) {
  const call = async (method, path, key, body) => {
    const response = await fetch(base + path, {
      method,
      headers: { 'Content-Type': 'application/json', ...(key ? { Authorization: `Bearer ${key}` } : {}) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const data = await response.json().catch(() => null);
    if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${JSON.stringify(data)}`);
    return data;
  };
  return {
    /** A clinician: {id, api_key}. */
    clinician: (admin, name = 'Dr. Meredith Grey') =>
      call('POST', '/api/staff', admin, { role: 'clinician', display_name: name }),
    /** A visit `offsetMinutes` from now with its links: {visit, links}. */
    async visit(admin, clinicianId, { offsetMinutes = 0, duration = 30, waitingRoom = true, mediaBackend } = {}) {
      const visit = await call('POST', '/api/visits', admin, {
        clinician_id: clinicianId,
        scheduled_at: new Date(Date.now() + offsetMinutes * 60000).toISOString(),
        duration_minutes: duration,
        patient: { name: 'Ada Lovelace', phone: '+15551234567' },
        chief_complaint: 'cough',
        waiting_room: waitingRoom,
        ...(mediaBackend ? { media_backend: mediaBackend } : {}),
      });
      const links = await call('POST', `/api/visits/${visit.id}/links`, admin);
      return { visit, links };
    },
    get: (path, key) => call('GET', path, key),
    /** The start answers of a visit's patient (by link code) and clinician (by API key). */
    async start(visit, links, clinicianKey) {
      const patient = await call('POST', `/api/visits/${visit.id}/start`, null, { code: links.patient.code });
      const clinician = await call('POST', `/api/visits/${visit.id}/start-authenticated`, clinicianKey, {});
      return { patient, clinician };
    },
  };
}
