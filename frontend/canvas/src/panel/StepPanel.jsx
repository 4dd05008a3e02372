// A step's side panel: only its kind's fields (from the catalog's field specs), its
// label, its key (read-only), the problems next to the fields they concern and, for a
// step that sends, a preview of the message.
import { useId } from "react";
import { Field, effectiveValue, isShown } from "./fields.jsx";
import { Preview } from "./Preview.jsx";
import { placeProblems } from "./problems.js";
import { useStyles } from "./styles.js";
import { withSetting } from "./units.js";

export function stepProblems(problems, key) {
  return (problems || []).filter(
    (p) =>
      p.step === key ||
      (p.step == null && (p.field === `steps.${key}` || String(p.field || "").startsWith(`steps.${key}.`))),
  );
}

export function PanelHead({ title, subtitle, onClose }) {
  return (
    <div className="jp-head">
      <h2>
        {title}
        {subtitle && <span className="jp-kind">{subtitle}</span>}
      </h2>
      {onClose && (
        <button type="button" className="jp-close" onClick={onClose} aria-label="Close the panel" data-testid="panel-close">
          Close
        </button>
      )}
    </div>
  );
}

export function TopProblems({ messages }) {
  if (!messages?.length) return null;
  return (
    <ul className="jp-problems" data-testid="panel-problems" role="alert">
      {messages.map((m) => (
        <li className="jp-error" key={m}>
          {m}
        </li>
      ))}
    </ul>
  );
}

export function onEscape(onClose) {
  return (e) => {
    if (e.key === "Escape" && onClose && !e.defaultPrevented) {
      e.stopPropagation();
      onClose();
    }
  };
}

export function StepPanel({ step, kindSpec, catalog, problems, urls, onChange, onClose }) {
  useStyles();
  const labelId = useId();
  if (!step) return null;
  const specs = kindSpec?.fields || [];
  const config = step.config || {};
  const hasConditions = specs.some((s) => s.type === "conditions" && s.name === "conditions");
  const matchSpec = specs.find((s) => s.name === "match");
  // A branch's "all / any" is the conditions editor's own toggle.
  const inEditor = (s) => hasConditions && s.name === "match" && (!s.type || s.type === "select");
  const shown = specs.filter((s) => isShown(s, config, specs) && !inEditor(s));
  const names = specs.map((s) => s.name);
  const placed = placeProblems(stepProblems(problems, step.key), `steps.${step.key}`, [...names, "label"]);
  const set = (name, value) => {
    let next = withSetting(config, name, value);
    // Settings of another mode (a wait's minutes once it waits for a time of day) go,
    // so the step saves only what its panel shows.
    if (specs.some((s) => s.show_when?.field === name)) {
      for (const s of specs) {
        if (s.show_when && !isShown(s, next, specs)) next = withSetting(next, s.name, undefined);
      }
    }
    onChange({ ...step, config: next });
  };
  const sends = specs.some((s) => s.type === "template");
  return (
    <aside
      className="jp-panel"
      data-testid="side-panel"
      aria-label={`Step ${step.label || step.key}`}
      onKeyDown={onEscape(onClose)}
    >
      <PanelHead title={step.label || step.key} subtitle={kindSpec?.label || step.kind} onClose={onClose} />
      <TopProblems messages={placed.top} />
      {!kindSpec && <p className="jp-error">This kind of step ({step.kind}) has no settings to edit here.</p>}
      <div key={step.key}>
        <div className="jp-field" data-testid="field-label">
          <label htmlFor={`${labelId}-label`}>Label</label>
          <input
            type="text"
            id={`${labelId}-label`}
            name="label"
            value={step.label || ""}
            maxLength={200}
            placeholder="A short description shown on the canvas"
            onChange={(e) => onChange({ ...step, label: e.target.value })}
          />
          {(placed.byField.label || []).map((m) => (
            <p className="jp-error" key={m}>
              {m}
            </p>
          ))}
        </div>
        {shown.map((spec) => (
          <Field
            key={spec.name}
            spec={spec}
            value={config[spec.name]}
            values={config}
            catalog={catalog}
            onChange={(v) => set(spec.name, v)}
            messages={[...(placed.byField[spec.name] || []), ...(spec.type === "conditions" && matchSpec ? placed.byField.match || [] : [])]}
            rowProblems={placed.rows[spec.name]}
            extra={
              spec.type === "conditions" && spec.name === "conditions" && (matchSpec || step.kind === "branch")
                ? {
                    match: matchSpec ? effectiveValue(matchSpec, config) : config.match,
                    onMatchChange: (v) => set("match", v === "all" && config.match === undefined ? undefined : v),
                  }
                : undefined
            }
          />
        ))}
        {sends && <Preview config={config} catalog={catalog} urls={urls} />}
        <div className="jp-field" data-testid="field-key">
          <label htmlFor={`${labelId}-key`}>Step name</label>
          <input type="text" id={`${labelId}-key`} name="key" value={step.key} readOnly aria-describedby={`${labelId}-keyhelp`} />
          <p className="jp-help" id={`${labelId}-keyhelp`}>
            How the journey's history and reports name this step; it does not change.
          </p>
        </div>
      </div>
    </aside>
  );
}
