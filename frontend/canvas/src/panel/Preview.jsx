// The chosen template rendered for a sample customer by the server's own renderer
// (canvas/preview.json), with a locale switch and a customer to sample.
import { useEffect, useId, useState } from "react";
import { channelLabel, templateOf } from "./fields.jsx";

export function previewUrl(urls) {
  return urls?.preview || urls?.preview_json || urls?.canvas_preview || null;
}

function errorMessage(status, data) {
  if (data && typeof data === "object") {
    const text =
      data.message ||
      data.error?.message ||
      (typeof data.error === "string" ? data.error : null) ||
      data.detail ||
      (Array.isArray(data.problems) ? data.problems.map((p) => p.message).join(" ") : null);
    if (text) return String(text);
  }
  if (status === 404) return "This message can't be previewed: the template or customer was not found.";
  return "This message can't be previewed right now.";
}

export function Preview({ config, catalog, urls }) {
  const id = useId();
  const template = templateOf(catalog, config?.template);
  const channels = (template?.channels || []).filter((c) => c !== "preferred");
  const wanted = config?.channel && config.channel !== "preferred" ? config.channel : channels[0];
  const [channel, setChannel] = useState(wanted || "");
  const [locale, setLocale] = useState("");
  const [customer, setCustomer] = useState("");
  const [state, setState] = useState({ loading: false, result: null, error: "" });
  useEffect(() => {
    setChannel(wanted || "");
  }, [wanted]);
  const url = previewUrl(urls);
  const locales = template?.locales || [];
  useEffect(() => {
    if (!url || !template || !channel) return undefined;
    let cancelled = false;
    const timer = setTimeout(async () => {
      setState((s) => ({ ...s, loading: true }));
      const params = new URLSearchParams({ template: template.key, channel });
      if (locale) params.set("locale", locale);
      if (customer.trim()) params.set("customer", customer.trim());
      const glue = url.includes("?") ? "&" : "?";
      try {
        const response = await fetch(`${url}${glue}${params}`, {
          credentials: "same-origin",
          headers: { Accept: "application/json" },
        });
        let data = null;
        try {
          data = await response.json();
        } catch {
          data = null;
        }
        if (cancelled) return;
        if (!response.ok) {
          setState({ loading: false, result: null, error: errorMessage(response.status, data) });
        } else {
          setState({ loading: false, result: data, error: "" });
        }
      } catch {
        if (!cancelled) {
          setState({ loading: false, result: null, error: "The preview could not be loaded (no connection)." });
        }
      }
    }, 250);
    return () => {
      cancelled = true;
      clearTimeout(timer);
    };
  }, [url, template?.key, channel, locale, customer]);

  if (!template) {
    return (
      <div className="jp-preview" data-testid="preview">
        <p className="jp-muted">Choose a template to see a preview of the message.</p>
      </div>
    );
  }
  const r = state.result;
  return (
    <div className="jp-preview" data-testid="preview" aria-live="polite">
      <h3 className="jp-preview-title">Preview</h3>
      <div className="jp-preview-controls">
        {channels.length > 1 && (
          <div>
            <label htmlFor={`${id}-channel`} className="jp-muted">
              Channel
            </label>
            <select id={`${id}-channel`} name="preview_channel" value={channel} onChange={(e) => setChannel(e.target.value)}>
              {channels.map((c) => (
                <option key={c} value={c}>
                  {channelLabel(c)}
                </option>
              ))}
            </select>
          </div>
        )}
        <div>
          <label htmlFor={`${id}-locale`} className="jp-muted">
            Language
          </label>
          <select id={`${id}-locale`} name="preview_locale" value={locale} onChange={(e) => setLocale(e.target.value)}>
            <option value="">The customer's</option>
            {locales.map((l) => (
              <option key={l} value={l}>
                {l}
              </option>
            ))}
          </select>
        </div>
        <div className="jp-preview-customer">
          <label htmlFor={`${id}-customer`} className="jp-muted">
            Sample customer
          </label>
          <input
            type="text"
            id={`${id}-customer`}
            name="preview_customer"
            placeholder="Customer id; empty: a sample customer"
            value={customer}
            onChange={(e) => setCustomer(e.target.value)}
          />
        </div>
      </div>
      {!channels.length && <p className="jp-error">This template has no version for any channel yet.</p>}
      {state.error && (
        <p className="jp-error" role="alert" data-testid="preview-error">
          {state.error}
        </p>
      )}
      {state.loading && !r && <p className="jp-muted">Rendering…</p>}
      {r && !state.error && (
        <div data-testid="preview-message">
          <p className="jp-preview-meta">
            {channelLabel(r.channel || channel)}
            {r.locale ? ` · ${r.locale}` : ""}
            {r.customer ? ` · for ${customerName(r.customer)}` : ""}
          </p>
          {r.subject && <p className="jp-preview-subject">{r.subject}</p>}
          {r.html ? (
            <iframe
              title="Email preview"
              sandbox=""
              srcDoc={r.html}
              data-testid="preview-html"
            />
          ) : (
            <p className="jp-preview-body">{r.body}</p>
          )}
        </div>
      )}
    </div>
  );
}

function customerName(c) {
  if (typeof c !== "object" || !c) return String(c);
  if (c.sample) return "a sample customer";
  const name = [c.first_name, c.last_name].filter(Boolean).join(" ") || c.name;
  return name || c.external_id || c.email || (c.id !== undefined ? `customer ${c.id}` : "a sample customer");
}
