// One control per field spec type ({name, label, type, required, help, choices,
// show_when}): the side panel renders a step's (or a trigger's) settings from them.
import { useEffect, useId, useState } from "react";
import { ConditionsEditor } from "./ConditionsEditor.jsx";
import {
  UNIT_CHOICES,
  displayUnit,
  parseValue,
  showValue,
  storedUnit,
  toUnit,
} from "./units.js";

export const CHANNEL_LABELS = {
  preferred: "The customer's preferred channel",
  email: "Email",
  sms: "SMS",
  whatsapp: "WhatsApp",
  line: "LINE",
  push: "Push",
  dev: "Dev inbox",
};

export function channelLabel(channel) {
  return CHANNEL_LABELS[channel] || channel;
}

export function templateOf(catalog, key) {
  return (catalog?.templates || []).find((t) => t.key === key) || null;
}

// The value a field shows when the settings leave it unspelled.
export function effectiveValue(spec, values) {
  const v = values?.[spec.name];
  if (v !== undefined && v !== null) return v;
  if (spec.default !== undefined) return spec.default;
  if (spec.type === "select" && spec.required && spec.choices?.length) return spec.choices[0].value;
  return v;
}

// Whether a field applies, given the other settings (a wait's mode picks its fields).
export function isShown(spec, values, specs) {
  const when = spec.show_when;
  if (!when) return true;
  const other = (specs || []).find((s) => s.name === when.field);
  let current = other ? effectiveValue(other, values) : values?.[when.field];
  if (current === undefined && other?.type === "select" && other.choices?.length) {
    current = other.choices[0].value;
  }
  if ("equals" in when) return current === when.equals;
  if (Array.isArray(when.in)) return when.in.includes(current);
  if ("not_equals" in when) return current !== when.not_equals;
  return true;
}

function Select({ id, name, value, onChange, options, blank, describedBy, required }) {
  const known = options.some((o) => String(o.value) === String(value ?? ""));
  return (
    <select
      id={id}
      name={name}
      value={value ?? ""}
      aria-describedby={describedBy}
      aria-required={required || undefined}
      onChange={(e) => onChange(e.target.value === "" ? undefined : e.target.value)}
    >
      {blank !== null && <option value="">{blank ?? "—"}</option>}
      {!known && value !== undefined && value !== null && value !== "" && (
        <option value={value}>{`${value} (not available)`}</option>
      )}
      {options.map((o) => (
        <option key={String(o.value)} value={o.value}>
          {o.label}
        </option>
      ))}
    </select>
  );
}

export function DurationInput({ id, name, value, unit, onChange, describedBy, units, signed }) {
  const stored = unit || "minutes";
  const offered = units || (stored === "seconds" ? ["seconds", "minutes"] : UNIT_CHOICES);
  const [shown, setShown] = useState(() => displayUnit(value, stored));
  const [before, setBefore] = useState(() => typeof value === "number" && value < 0);
  useEffect(() => {
    // A new value from outside (undo, another step) may not fit the unit shown.
    if (typeof value === "number" && !Number.isInteger(toUnit(Math.abs(value), stored, shown))) {
      setShown(displayUnit(value, stored));
    }
    if (typeof value === "number" && value !== 0) setBefore(value < 0);
  }, [value, stored, shown]);
  const amount = typeof value === "number" ? toUnit(Math.abs(value), stored, shown) : "";
  const emit = (text, inUnit, isBefore) => {
    if (text === "" || text === null) return onChange(undefined);
    const n = Number(text);
    if (!Number.isFinite(n)) return undefined;
    const out = toUnit(Math.abs(n), inUnit, stored);
    return onChange(signed && isBefore ? -out : out);
  };
  return (
    <div className="jp-row">
      <input
        className="jp-grow"
        type="number"
        min="0"
        step="any"
        id={id}
        name={name}
        value={amount}
        aria-describedby={describedBy}
        onChange={(e) => emit(e.target.value, shown, before)}
      />
      <select
        className="jp-unit"
        name={`${name}_unit`}
        aria-label="unit"
        value={offered.includes(shown) ? shown : stored}
        onChange={(e) => {
          const next = e.target.value;
          setShown(next);
          if (amount !== "") emit(amount, next, before);
        }}
      >
        {offered.map((u) => (
          <option key={u} value={u}>
            {u}
          </option>
        ))}
      </select>
      {signed && (
        <select
          className="jp-unit"
          name={`${name}_direction`}
          aria-label="before or after"
          value={before ? "before" : "after"}
          onChange={(e) => {
            const isBefore = e.target.value === "before";
            setBefore(isBefore);
            if (amount !== "") emit(amount, shown, isBefore);
          }}
        >
          <option value="after">after</option>
          <option value="before">before</option>
        </select>
      )}
    </div>
  );
}

function JsonInput({ id, name, value, onChange, describedBy }) {
  const [text, setText] = useState(() => (value === undefined ? "" : JSON.stringify(value, null, 2)));
  const [error, setError] = useState("");
  useEffect(() => {
    // Keep what is typed unless the value changed from outside.
    setText((old) => {
      try {
        if (old.trim() && JSON.stringify(JSON.parse(old)) === JSON.stringify(value)) return old;
      } catch {
        return old;
      }
      return value === undefined ? "" : JSON.stringify(value, null, 2);
    });
  }, [value]);
  return (
    <>
      <textarea
        id={id}
        name={name}
        value={text}
        spellCheck={false}
        aria-describedby={describedBy}
        aria-invalid={error ? true : undefined}
        onChange={(e) => {
          const t = e.target.value;
          setText(t);
          if (!t.trim()) {
            setError("");
            onChange(undefined);
            return;
          }
          try {
            const parsed = JSON.parse(t);
            setError("");
            onChange(parsed);
          } catch (err) {
            setError(`This is not valid JSON yet: ${err.message}`);
          }
        }}
      />
      {error && (
        <p className="jp-error" role="alert" data-testid="json-error">
          {error}
        </p>
      )}
    </>
  );
}

function TextWithList({ id, name, value, onChange, options, describedBy, type = "text" }) {
  const listId = `${id}-list`;
  return (
    <>
      <input
        type={type}
        id={id}
        name={name}
        value={showValue(value)}
        list={options?.length ? listId : undefined}
        autoComplete="off"
        aria-describedby={describedBy}
        onChange={(e) => onChange(e.target.value === "" ? undefined : e.target.value)}
      />
      {options?.length > 0 && (
        <datalist id={listId}>
          {options.map((o) => (
            <option key={o} value={o} />
          ))}
        </datalist>
      )}
    </>
  );
}

function channelOptions(catalog, template, { fallback, channel }) {
  const t = templateOf(catalog, template);
  const all = (catalog?.channels || []).filter((c) => c !== "preferred");
  const available = t ? t.channels || [] : all;
  if (fallback) {
    return available
      .filter((c) => c !== channel && c !== "preferred")
      .map((c) => ({ value: c, label: channelLabel(c) }));
  }
  return [
    { value: "preferred", label: channelLabel("preferred") },
    ...available.filter((c) => c !== "preferred").map((c) => ({ value: c, label: channelLabel(c) })),
  ];
}

// The control for one spec; ``values`` are the sibling settings (a channel needs the
// template chosen beside it).
export function Control({ spec, id, value, values, catalog, onChange, describedBy, rowProblems, extra }) {
  const name = spec.name;
  const common = { id, name, describedBy };
  switch (spec.type) {
    case "template": {
      const options = (catalog?.templates || []).map((t) => ({
        value: t.key,
        label: `${t.name || t.key}${t.channels?.length ? ` (${t.channels.map(channelLabel).join(", ")})` : " (no channels)"}`,
      }));
      return (
        <Select {...common} value={value} onChange={onChange} options={options} blank="— choose a template —" required={spec.required} />
      );
    }
    case "channel":
    case "fallback": {
      const fallback = spec.type === "fallback" || /fallback/.test(name);
      const options = channelOptions(catalog, values?.template, {
        fallback,
        channel: values?.channel || "preferred",
      });
      return (
        <Select
          {...common}
          value={fallback ? value : (value ?? "preferred")}
          onChange={onChange}
          options={options}
          blank={fallback ? "No fallback" : null}
        />
      );
    }
    case "duration":
      return (
        <DurationInput
          {...common}
          value={value}
          unit={storedUnit(spec)}
          signed={Boolean(spec.signed)}
          onChange={onChange}
        />
      );
    case "time":
      return (
        <input
          type="time"
          id={id}
          name={name}
          value={value ?? ""}
          aria-describedby={describedBy}
          onChange={(e) => onChange(e.target.value || undefined)}
        />
      );
    case "date":
      return (
        <input
          type="date"
          id={id}
          name={name}
          value={value ?? ""}
          aria-describedby={describedBy}
          onChange={(e) => onChange(e.target.value || undefined)}
        />
      );
    case "number":
      return (
        <input
          type="number"
          id={id}
          name={name}
          min={spec.min}
          max={spec.max}
          step={spec.step ?? "any"}
          value={value ?? ""}
          aria-describedby={describedBy}
          onChange={(e) => {
            const t = e.target.value;
            onChange(t === "" ? undefined : Number(t));
          }}
        />
      );
    case "event":
      return <TextWithList {...common} value={value} onChange={onChange} options={catalog?.events || []} />;
    case "attribute":
      return (
        <TextWithList
          {...common}
          value={value}
          onChange={onChange}
          options={(catalog?.attributes || []).map((a) => (typeof a === "string" ? a : a.name))}
        />
      );
    case "segment":
      return (
        <Select
          {...common}
          value={value}
          onChange={onChange}
          options={(catalog?.segments || []).map((s) => ({ value: s.key, label: s.name || s.key }))}
          blank="— choose a segment —"
        />
      );
    case "topic":
      return (
        <Select
          {...common}
          value={value}
          onChange={onChange}
          options={(catalog?.topics || []).map((t) => ({ value: t.key, label: t.name || t.key }))}
          blank="— choose a topic —"
        />
      );
    case "select":
      return (
        <Select
          {...common}
          value={value ?? effectiveValue(spec, values)}
          onChange={onChange}
          options={spec.choices || []}
          blank={spec.required ? null : "—"}
        />
      );
    case "bool":
      return (
        <label className="jp-check" htmlFor={id}>
          <input
            type="checkbox"
            id={id}
            name={name}
            checked={Boolean(value)}
            aria-describedby={describedBy}
            onChange={(e) => onChange(e.target.checked)}
          />
          {spec.check_label || "Yes"}
        </label>
      );
    case "value":
      // Any JSON value as a marketer types it: 5 and true are typed, the rest is text.
      return (
        <input
          type="text"
          id={id}
          name={name}
          value={showValue(value)}
          aria-describedby={describedBy}
          onChange={(e) => onChange(e.target.value === "" ? undefined : parseValue(e.target.value))}
        />
      );
    case "url":
      return <TextWithList {...common} type="url" value={value} onChange={onChange} />;
    case "json":
      return <JsonInput {...common} value={value} onChange={onChange} />;
    case "conditions":
      if (spec.or_segment) {
        return (
          <SegmentOrConditions spec={spec} id={id} value={value} catalog={catalog} onChange={onChange} rowProblems={rowProblems} />
        );
      }
      return (
        <ConditionsEditor
          id={id}
          name={name}
          value={Array.isArray(value) ? value : []}
          catalog={catalog}
          types={spec.condition_types || spec.types || (name === "filter" ? ["property"] : undefined)}
          onChange={(list) => onChange(list.length ? list : undefined)}
          problems={rowProblems}
          {...(extra || {})}
        />
      );
    default:
      return <TextWithList {...common} value={value} onChange={onChange} />;
  }
}

// A trigger's audience: a saved segment (its key) or conditions written here.
function SegmentOrConditions({ spec, id, value, catalog, onChange, rowProblems }) {
  const saved = typeof value === "string";
  const segments = catalog?.segments || [];
  return (
    <div>
      <div className="jp-match" role="radiogroup" aria-label="Who">
        <label className="jp-check">
          <input
            type="radio"
            name={`${spec.name}_source`}
            value="saved"
            checked={saved}
            onChange={() => onChange(segments[0]?.key)}
          />
          a saved segment
        </label>
        <label className="jp-check">
          <input
            type="radio"
            name={`${spec.name}_source`}
            value="conditions"
            checked={!saved}
            onChange={() => onChange(undefined)}
          />
          customers matching conditions
        </label>
      </div>
      {saved ? (
        <Select
          id={id}
          name={spec.name}
          value={value}
          onChange={onChange}
          options={segments.map((s) => ({ value: s.key, label: s.name || s.key }))}
          blank="— choose a segment —"
        />
      ) : (
        <ConditionsEditor
          id={id}
          name={spec.name}
          value={Array.isArray(value) ? value : []}
          catalog={catalog}
          types={spec.condition_types || spec.types}
          onChange={(list) => onChange(list.length ? list : undefined)}
          problems={rowProblems}
        />
      )}
    </div>
  );
}

// A spec's label, control, help and its problems, tied together for screen readers.
export function Field({ spec, value, values, catalog, onChange, messages, rowProblems, extra }) {
  const id = useId();
  const helpId = spec.help ? `${id}-help` : undefined;
  const errorId = messages?.length ? `${id}-error` : undefined;
  const describedBy = [helpId, errorId].filter(Boolean).join(" ") || undefined;
  const group = spec.type === "conditions" || spec.type === "bool";
  const label = (
    <>
      {spec.label || spec.name}
      {spec.required && (
        <span className="jp-req" aria-label="required" title="required">
          *
        </span>
      )}
    </>
  );
  return (
    <div className={`jp-field${messages?.length ? " jp-has-error" : ""}`} data-testid={`field-${spec.name}`}>
      {group ? (
        <div className="jp-label" id={`${id}-label`}>
          {label}
        </div>
      ) : (
        <label htmlFor={id}>{label}</label>
      )}
      <Control
        spec={spec}
        id={id}
        value={value}
        values={values}
        catalog={catalog}
        onChange={onChange}
        describedBy={describedBy}
        rowProblems={rowProblems}
        extra={extra}
      />
      {spec.help && (
        <p className="jp-help" id={helpId}>
          {spec.help}
        </p>
      )}
      {messages?.length > 0 && (
        <div id={errorId} data-testid="field-problems">
          {messages.map((m) => (
            <p className="jp-error" key={m}>
              {m}
            </p>
          ))}
        </div>
      )}
    </div>
  );
}
