// The HTTP API. Same origin, JSON both ways, problems (RFC 9457) turned into {code, status}.
// `credentials: 'same-origin'` sends the HttpOnly device cookie that binds a link to this
// browser, so a reload rejoins and another device is refused.

/** An API answer: `ok` with `data`, or a problem with its stable `code`. */
export async function call(method, path, { body, key } = {}) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (key) headers.Authorization = `Bearer ${key}`;
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: 'same-origin',
      cache: 'no-store',
      referrerPolicy: 'no-referrer',
    });
  } catch {
    return { ok: false, status: 0, code: 'network', data: null };
  }
  let data = null;
  if (response.status !== 204) {
    try { data = await response.json(); } catch { data = null; }
  }
  if (response.ok) return { ok: true, status: response.status, data };
  return {
    ok: false,
    status: response.status,
    code: (data && data.code) || `http_${response.status}`,
    data,
    retryAfter: Number(response.headers.get('Retry-After')) || null,
  };
}

export const post = (path, body, key) => call('POST', path, { body: body ?? {}, key });
export const get = (path, key) => call('GET', path, { key });
