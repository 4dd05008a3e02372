// JSON calls to the admin's canvas endpoints (staff session, CSRF token from the cookie).

function csrfToken() {
  const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
  return match ? decodeURIComponent(match[1]) : "";
}

/** Returns {ok, status, data}; a network failure or a non-JSON answer is a readable error. */
export async function call(url, { method = "GET", body } = {}) {
  const options = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
  if (body !== undefined) {
    options.body = JSON.stringify(body);
    options.headers["Content-Type"] = "application/json";
  }
  if (method !== "GET") options.headers["X-CSRFToken"] = csrfToken();
  let response;
  try {
    response = await fetch(url, options);
  } catch (error) {
    return { ok: false, status: 0, data: { error: `The server could not be reached (${error.message}).` } };
  }
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = { error: `The server answered ${response.status} without JSON.` };
  }
  return { ok: response.ok, status: response.status, data };
}

export function errorText(result) {
  const d = result.data || {};
  if (d.problems?.length) return d.problems.map((p) => p.message).join(" ");
  return d.error || d.detail || d.message || `Request failed (${result.status}).`;
}
