// The side panel's look, in the Django admin's colours (its CSS variables), injected
// into the page once.

const CSS = `
.jp-panel {
  box-sizing: border-box; width: 100%; padding: 2px 2px 24px;
  background: var(--body-bg, #fff); color: var(--body-fg, #333);
  font-family: var(--font-family-primary, sans-serif); font-size: 0.8125rem; line-height: 1.4;
}
.jp-panel *, .jp-panel *::before, .jp-panel *::after { box-sizing: border-box; }
.jp-head { display: flex; align-items: flex-start; gap: 8px; margin-bottom: 10px; padding-right: 30px; }
.jp-head h2 {
  flex: 1; margin: 0; font-size: 1rem; font-weight: 600; color: var(--body-fg, #333);
  background: none; padding: 0; text-transform: none; letter-spacing: 0;
}
.jp-head .jp-kind { display: block; font-size: 0.75rem; color: var(--body-quiet-color, #666); font-weight: 400; }
.jp-panel .jp-close {
  border: 1px solid var(--border-color, #ccc); background: var(--body-bg, #fff);
  color: var(--body-fg, #333); border-radius: 4px; padding: 2px 8px; cursor: pointer; font-size: 0.8125rem;
}
.jp-section { margin: 14px 0 6px; padding-top: 10px; border-top: 1px solid var(--hairline-color, #e8e8e8); }
.jp-section > h3 {
  margin: 0 0 8px; font-size: 0.8125rem; font-weight: 600; text-transform: none;
  color: var(--body-fg, #333); background: none; padding: 0;
}
.jp-field { margin: 0 0 12px; }
.jp-field > label, .jp-field > .jp-label, .jp-field legend {
  display: block; font-weight: 600; margin: 0 0 3px; color: var(--body-fg, #333); padding: 0; font-size: 0.8125rem;
}
.jp-field fieldset { border: 0; margin: 0; padding: 0; min-width: 0; }
.jp-req { color: var(--error-fg, #ba2121); margin-left: 2px; }
.jp-help { color: var(--body-quiet-color, #666); font-size: 0.75rem; margin: 3px 0 0; }
.jp-panel input[type=text], .jp-panel input[type=number], .jp-panel input[type=url],
.jp-panel input[type=time], .jp-panel input[type=date], .jp-panel input:not([type]),
.jp-panel select, .jp-panel textarea {
  width: 100%; max-width: 100%; padding: 5px 6px; border: 1px solid var(--border-color, #ccc);
  border-radius: 4px; background: var(--body-bg, #fff); color: var(--body-fg, #333);
  font: inherit; min-height: 30px;
}
.jp-panel textarea { min-height: 90px; font-family: var(--font-family-monospace, monospace); font-size: 0.75rem; }
.jp-panel input[readonly] { background: var(--darkened-bg, #f8f8f8); color: var(--body-quiet-color, #666); }
.jp-panel :focus-visible { outline: 2px solid var(--primary, #79aec8); outline-offset: 1px; }
.jp-panel input:focus, .jp-panel select:focus, .jp-panel textarea:focus { border-color: var(--primary, #79aec8); }
.jp-row { display: flex; gap: 6px; align-items: center; }
.jp-row > * { min-width: 0; }
.jp-row > .jp-grow { flex: 1; }
.jp-row > select.jp-unit { width: auto; flex: 0 0 auto; }
.jp-check { display: flex; gap: 6px; align-items: center; font-weight: 400; margin: 2px 0; }
.jp-check input { margin: 0; }
.jp-error {
  color: var(--error-fg, #ba2121); background: var(--message-error-bg, #ffefef);
  border-radius: 4px; padding: 4px 7px; margin: 4px 0 0; font-size: 0.75rem;
}
.jp-problems { margin: 0 0 12px; padding: 0; list-style: none; }
.jp-problems li { margin: 0 0 4px; }
.jp-field.jp-has-error input, .jp-field.jp-has-error select, .jp-field.jp-has-error textarea {
  border-color: var(--error-fg, #ba2121);
}
.jp-panel .jp-btn {
  border: 1px solid var(--border-color, #ccc); background: var(--darkened-bg, #f8f8f8);
  color: var(--body-fg, #333); border-radius: 4px; padding: 4px 10px; cursor: pointer; font: inherit;
}
.jp-panel .jp-btn:hover { border-color: var(--primary, #79aec8); }
.jp-panel .jp-btn-small { padding: 1px 7px; font-size: 0.75rem; }
.jp-panel .jp-link { background: none; border: 0; color: var(--link-fg, #447e9b); cursor: pointer; padding: 0; font: inherit; }
.jp-cond-list { margin: 6px 0; padding: 0; list-style: none; }
.jp-cond {
  border: 1px solid var(--hairline-color, #e8e8e8); border-radius: 4px; padding: 8px;
  margin: 0 0 8px; background: var(--darkened-bg, #f8f8f8);
}
.jp-cond .jp-row + .jp-row, .jp-cond .jp-row + div, .jp-cond div + .jp-row { margin-top: 6px; }
.jp-cond-head { display: flex; align-items: center; justify-content: space-between; margin-bottom: 4px; }
.jp-cond-head span { font-size: 0.75rem; color: var(--body-quiet-color, #666); }
.jp-match { display: flex; gap: 14px; flex-wrap: wrap; margin: 2px 0 4px; }
.jp-chips { display: flex; flex-wrap: wrap; gap: 4px; margin: 0 0 4px; padding: 0; list-style: none; }
.jp-chip {
  display: inline-flex; align-items: center; gap: 4px; background: var(--selected-bg, #e4e4e4);
  border-radius: 10px; padding: 1px 4px 1px 8px; font-size: 0.75rem;
}
.jp-panel .jp-chip button { border: 0; background: none; cursor: pointer; color: var(--body-fg, #333); padding: 0 3px; font-size: 0.875rem; line-height: 1; }
.jp-preview { margin-top: 8px; border: 1px solid var(--hairline-color, #e8e8e8); border-radius: 4px; padding: 8px; }
.jp-preview-title { margin: 0 0 6px; font-size: 0.8125rem; font-weight: 600; background: none; padding: 0; color: var(--body-fg, #333); text-transform: none; }
.jp-preview-controls { display: grid; grid-template-columns: 1fr 1fr; gap: 6px 8px; margin-bottom: 6px; }
.jp-preview-controls label { display: block; font-size: 0.75rem; }
.jp-preview-customer { grid-column: 1 / -1; }
.jp-preview-subject { font-weight: 600; margin: 4px 0; }
.jp-preview-body { white-space: pre-wrap; margin: 4px 0; font-size: 0.75rem; }
.jp-preview iframe { width: 100%; height: 260px; border: 1px solid var(--hairline-color, #e8e8e8); background: #fff; }
.jp-preview-meta { color: var(--body-quiet-color, #666); font-size: 0.75rem; }
.jp-muted { color: var(--body-quiet-color, #666); }
.jp-exit-row { display: flex; gap: 6px; align-items: flex-end; margin: 0 0 6px; }
.jp-exit-row > div { flex: 1; min-width: 0; }
.jp-exit-row label { font-size: 0.75rem; font-weight: 400; display: block; }
`;

let injected = false;

export function useStyles() {
  if (injected || typeof document === "undefined") return;
  injected = true;
  const style = document.createElement("style");
  style.id = "journey-panel-style";
  style.textContent = CSS;
  document.head.appendChild(style);
}
