// The side drawers: changes against the published version, the forecast, the versions,
// and the publish confirmation.
import { useEffect, useState } from "react";
import { call, errorText } from "./api.js";

function useJson(url, options, deps) {
  const [state, setState] = useState({ loading: true });
  useEffect(() => {
    let stale = false;
    setState({ loading: true });
    call(url, options).then((result) => {
      if (!stale) setState(result.ok ? { data: result.data } : { error: errorText(result) });
    });
    return () => {
      stale = true;
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, deps);
  return state;
}

function Unsaved({ dirty, what }) {
  if (!dirty) return null;
  return <p className="jc-note">You have unsaved changes: {what} shows the saved draft. Save the draft to include them.</p>;
}

export function DiffDrawer({ url, dirty }) {
  const state = useJson(url, {}, [url]);
  return (
    <section className="jc-drawer" data-testid="diff-panel" aria-label="Changes">
      <h3>Changes against the published version</h3>
      <Unsaved dirty={dirty} what="this list" />
      {state.loading ? <p>Loading…</p> : null}
      {state.error ? <p className="jc-bad">{state.error}</p> : null}
      {state.data ? (
        <>
          <p>
            {state.data.published_version
              ? `Draft against version ${state.data.published_version}.`
              : "Nothing is published yet: everything is new."}
          </p>
          {state.data.changes?.length ? (
            <ul className="jc-changes">
              {state.data.changes.map((c, i) => (
                <li key={i} className={`jc-change-${c.change}`}>
                  <strong>{c.change}</strong> {c.summary || c.where}
                </li>
              ))}
            </ul>
          ) : (
            <p>No changes.</p>
          )}
        </>
      ) : null}
    </section>
  );
}

function total(value) {
  if (value && typeof value === "object") return Object.values(value).reduce((a, b) => a + (Number(b) || 0), 0);
  return Number(value) || 0;
}

function Breakdown({ value }) {
  if (!value || typeof value !== "object") return <>{String(value ?? 0)}</>;
  const entries = Object.entries(value);
  if (!entries.length) return <>0</>;
  return entries.map(([k, v]) => (
    <div key={k}>
      {k}: {v}
    </div>
  ));
}

export function SimulateDrawer({ url, dirty }) {
  const [days, setDays] = useState(14);
  const [state, setState] = useState(null);
  async function run() {
    setState({ loading: true });
    const result = await call(url, { method: "POST", body: { days: Number(days) } });
    setState(result.ok ? { data: result.data } : { error: errorText(result) });
  }
  useEffect(() => {
    run();
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, []);
  const data = state?.data;
  return (
    <section className="jc-drawer" data-testid="simulate-panel" aria-label="Forecast">
      <h3>Forecast of the saved draft</h3>
      <Unsaved dirty={dirty} what="the forecast" />
      <form
        className="jc-inline"
        onSubmit={(e) => {
          e.preventDefault();
          run();
        }}
      >
        <label>
          Days <input type="number" min="1" max="60" value={days} name="days" onChange={(e) => setDays(e.target.value)} />
        </label>
        <button type="submit">Run</button>
      </form>
      {state?.loading ? <p>Simulating…</p> : null}
      {state?.error ? <p className="jc-bad">{state.error}</p> : null}
      {data ? (
        <>
          {data.totals ? (
            <table className="jc-table">
              <tbody>
                {Object.entries(data.totals).map(([k, v]) => (
                  <tr key={k}>
                    <th>{k}</th>
                    <td>
                      <Breakdown value={v} />
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          ) : null}
          {data.days?.length ? (
            <table className="jc-table">
              <thead>
                <tr>
                  <th>Day</th>
                  <th>Entries</th>
                  <th>Messages</th>
                  <th>Held</th>
                </tr>
              </thead>
              <tbody>
                {data.days.map((d) => (
                  <tr key={d.date}>
                    <td>{d.date}</td>
                    <td>{d.entries}</td>
                    <td>{total(d.messages)}</td>
                    <td>{total(d.held)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          ) : null}
          {data.assumptions?.length ? (
            <>
              <h4>Assumptions</h4>
              <ul>
                {data.assumptions.map((a, i) => (
                  <li key={i}>{typeof a === "string" ? a : a.text || a.message || JSON.stringify(a)}</li>
                ))}
              </ul>
            </>
          ) : null}
        </>
      ) : null}
    </section>
  );
}

export function VersionsDrawer({ url }) {
  const state = useJson(url, {}, [url]);
  const rows = Array.isArray(state.data) ? state.data : state.data?.versions;
  return (
    <section className="jc-drawer" data-testid="versions-panel" aria-label="Versions">
      <h3>Published versions</h3>
      {state.loading ? <p>Loading…</p> : null}
      {state.error ? <p className="jc-bad">{state.error}</p> : null}
      {rows ? (
        rows.length ? (
          <ol className="jc-versions" reversed>
            {rows.map((v) => (
              <li key={v.number}>
                <strong>Version {v.number}</strong>
                <div>
                  {v.published_at ? new Date(v.published_at).toLocaleString() : "not published"}
                  {v.published_by ? ` by ${v.published_by}` : ""}
                </div>
                <div className="jc-sub">
                  {v.steps} steps{v.summary ? ` · ${v.summary}` : ""}
                </div>
              </li>
            ))}
          </ol>
        ) : (
          <p>Nothing published yet.</p>
        )
      ) : null}
    </section>
  );
}

export function PublishDialog({ dirty, problems, next, onConfirm, onCancel }) {
  return (
    <div className="jc-modal-backdrop">
      <div className="jc-modal" role="dialog" aria-modal="true" aria-labelledby="jc-publish-title">
        <h3 id="jc-publish-title">Publish version {next}?</h3>
        <p>Customers who enter from now on follow the new version; those already on the journey keep theirs.</p>
        {dirty ? <p>Your unsaved changes are saved first.</p> : null}
        {problems ? <p className="jc-bad">There are {problems} problems: publishing will be refused until they are fixed.</p> : null}
        <div className="jc-modal-actions">
          <button type="button" className="jc-primary" data-testid="publish-confirm" onClick={onConfirm} autoFocus>
            Publish
          </button>
          <button type="button" onClick={onCancel}>
            Cancel
          </button>
        </div>
      </div>
    </div>
  );
}
