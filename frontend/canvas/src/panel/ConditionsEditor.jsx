// Conditions built from choices that are all valid: a field (an attribute, an event,
// the last message, a reply, a saved segment), a comparison offered only where the
// server accepts it for that field, and a value control of the field's type.
// The output is the conditions JSON of orchestrator/segments/conditions.py.
import { useId, useState } from "react";
import { parseValue, showValue, typedValue } from "./units.js";

// What the server accepts per condition type (orchestrator/segments/conditions.py
// OPS_BY_TYPE); the catalog's operators are only ever narrowed by it.
const ACCEPTED = {
  attribute: ["eq", "ne", "gt", "gte", "lt", "lte", "contains", "in", "exists", "not_exists"],
  property: ["eq", "ne", "gt", "gte", "lt", "lte", "contains", "in", "exists", "not_exists"],
  event: ["happened", "not_happened"],
  last_message: ["in", "not_in"],
  reply: ["eq", "contains", "starts_with"],
  segment: ["in", "not_in"],
};
export const CONDITION_TYPES = Object.keys(ACCEPTED);

// Comparisons that make sense for a value of this type.
const BY_VALUE_TYPE = {
  number: ["eq", "ne", "gt", "gte", "lt", "lte", "in", "exists", "not_exists"],
  date: ["eq", "gt", "gte", "lt", "lte", "exists", "not_exists"],
  datetime: ["eq", "gt", "gte", "lt", "lte", "exists", "not_exists"],
  bool: ["eq", "ne", "exists", "not_exists"],
  boolean: ["eq", "ne", "exists", "not_exists"],
  list: ["contains", "exists", "not_exists"],
  text: ["eq", "ne", "contains", "in", "exists", "not_exists"],
  string: ["eq", "ne", "contains", "in", "exists", "not_exists"],
};

const LABELS = {
  eq: "is",
  ne: "is not",
  gt: "is greater than",
  gte: "is at least",
  lt: "is less than",
  lte: "is at most",
  contains: "contains",
  in: "is one of",
  not_in: "is not one of",
  exists: "is set",
  not_exists: "is not set",
  happened: "happened",
  not_happened: "did not happen",
  starts_with: "starts with",
};
const DATE_LABELS = { gt: "is after", gte: "is on or after", lt: "is before", lte: "is on or before" };
const SEGMENT_LABELS = { in: "is a member", not_in: "is not a member" };

const MESSAGE_STATUSES = [
  ["sent", "sent"],
  ["delivered", "delivered"],
  ["opened", "opened"],
  ["clicked", "clicked"],
  ["replied", "replied"],
  ["undelivered", "undelivered"],
  ["bounced", "bounced"],
  ["failed", "failed"],
  ["suppressed", "suppressed (not sent)"],
  ["expired", "expired (not sent in time)"],
  ["canceled", "canceled"],
];

const GENERIC = {
  attribute: { label: "Another customer attribute…", group: "Customer attributes" },
  property: { label: "A property of the journey's event…", group: "Journey" },
  event: { label: "The customer did an event…", group: "Events" },
  last_message: { label: "The last message this journey sent", group: "Message history" },
  reply: { label: "The customer's latest reply", group: "Message history" },
  segment: { label: "Membership of a saved segment", group: "Segments" },
};

// Kinds of name a catalog's condition type takes (not names of particular fields).
const NAME_KINDS = ["attribute", "text", "event", "segment"];
// JSON types of attributes (as the catalog reports them) -> value types here.
const VALUE_TYPES = { string: "text", number: "number", boolean: "bool", array: "list" };

function fieldId(type, name) {
  return `${type}:${name ?? ""}`;
}

// The fields a condition row offers: the catalog's, then one free entry per type.
export function conditionFields(catalog, types) {
  const allowed = (types || CONDITION_TYPES).filter((t) => ACCEPTED[t]);
  const out = [];
  const seen = new Set();
  const add = (f) => {
    if (!allowed.includes(f.type) || seen.has(f.id)) return;
    seen.add(f.id);
    out.push(f);
  };
  // The catalog describes each condition type (what name it takes, which operators,
  // what value) and may list particular fields (an attribute with its value type).
  const described = {};
  for (const raw of catalog?.condition_fields || []) {
    if (!raw || typeof raw !== "object") continue;
    const type = raw.type || raw.condition_type;
    if (!ACCEPTED[type]) continue;
    const name = raw.segment ?? raw.field ?? raw.name ?? null;
    const isDescriptor =
      name === null || typeof raw.operators === "string" || NAME_KINDS.includes(name) || !raw.label;
    if (isDescriptor) {
      described[type] = raw;
      continue;
    }
    add({
      id: fieldId(type, name),
      type,
      name,
      label: raw.label || name,
      group: raw.group || GENERIC[type].group,
      valueType: raw.value_type || null,
      values: raw.values || raw.choices || null,
      operators: Array.isArray(raw.operators) ? raw.operators : null,
    });
  }
  for (const a of catalog?.attributes || []) {
    const name = typeof a === "string" ? a : a.name;
    add({
      id: fieldId("attribute", name),
      type: "attribute",
      name,
      label: name,
      group: GENERIC.attribute.group,
      valueType: typeof a === "string" ? null : VALUE_TYPES[a.type] || a.type || null,
    });
  }
  for (const type of allowed) {
    const d = described[type] || {};
    add({
      id: fieldId(type, null),
      type,
      name: null,
      label: GENERIC[type].label,
      group: GENERIC[type].group,
      values: d.choices || d.values || null,
      operatorsKey: typeof d.operators === "string" ? d.operators : null,
    });
  }
  if (allowed.length === 1 && allowed[0] === "property") {
    out.forEach((f) => {
      if (f.id === fieldId("property", null)) {
        f.label = "A property of the event…";
        f.group = "Event properties";
      }
    });
  }
  return out;
}

function operatorsFor(field, catalog) {
  const accepted = ACCEPTED[field.type] || [];
  const listed =
    field.operators ||
    (field.operatorsKey && catalog?.operators?.[field.operatorsKey]) ||
    catalog?.operators?.[field.type] ||
    accepted;
  let ops = listed.map((o) => (typeof o === "string" ? { op: o } : o));
  // Narrowed to what makes sense for the value's type (a number is not "contained").
  const sensible = field.valueType && BY_VALUE_TYPE[field.valueType];
  if (sensible && (field.type === "attribute" || field.type === "property")) {
    ops = ops.filter((o) => sensible.includes(o.op));
  }
  const dated = field.valueType === "date" || field.valueType === "datetime";
  return ops
    .filter((o) => accepted.includes(o.op))
    .map((o) => ({
      op: o.op,
      label:
        (field.type === "segment" && SEGMENT_LABELS[o.op]) ||
        (dated && DATE_LABELS[o.op]) ||
        o.label ||
        LABELS[o.op] ||
        o.op,
    }));
}

function fieldOf(condition, fields) {
  const type = condition?.type;
  const name = type === "segment" ? condition?.segment : condition?.name;
  return (
    fields.find((f) => f.id === fieldId(type, name)) ||
    fields.find((f) => f.id === fieldId(type, null)) ||
    null
  );
}

// A new condition for a field, keeping what still fits from the old one.
function conditionFor(field, old, catalog) {
  const ops = operatorsFor(field, catalog).map((o) => o.op);
  const keepOp = old && old.type === field.type && ops.includes(old.op) ? old.op : ops[0];
  if (field.type === "segment") {
    const first = field.name ?? (catalog?.segments || [])[0]?.key ?? "";
    return { type: "segment", segment: first, op: keepOp || "in" };
  }
  if (field.type === "last_message") return { type: "last_message", op: keepOp, value: ["opened"] };
  if (field.type === "reply") return { type: "reply", op: keepOp, value: "" };
  const out = { type: field.type, name: field.name ?? "", op: keepOp };
  if (field.type === "event") {
    if (old?.type === "event" && old.within_hours) out.within_hours = old.within_hours;
    return out;
  }
  return out;
}

function ListInput({ id, values, onChange, valueType, label, choices }) {
  const [text, setText] = useState("");
  const list = Array.isArray(values) ? values : [];
  if (choices) {
    return (
      <fieldset>
        <legend className="jp-muted" style={{ fontWeight: 400, fontSize: "0.75rem" }}>
          {label}
        </legend>
        {choices.map(([value, text]) => (
          <label key={value} className="jp-check">
            <input
              type="checkbox"
              name="value"
              value={value}
              checked={list.includes(value)}
              onChange={(e) =>
                onChange(e.target.checked ? [...list, value] : list.filter((v) => v !== value))
              }
            />
            {text}
          </label>
        ))}
      </fieldset>
    );
  }
  const addText = () => {
    const items = text
      .split(",")
      .map((t) => t.trim())
      .filter(Boolean)
      .map((t) => typedValue(t, valueType));
    if (!items.length) return;
    onChange([...list, ...items.filter((v) => !list.includes(v))]);
    setText("");
  };
  return (
    <div>
      {list.length > 0 && (
        <ul className="jp-chips" aria-label="values">
          {list.map((v, i) => (
            <li className="jp-chip" key={`${showValue(v)}-${i}`}>
              {showValue(v)}
              <button
                type="button"
                aria-label={`Remove ${showValue(v)}`}
                onClick={() => onChange(list.filter((_, j) => j !== i))}
              >
                ×
              </button>
            </li>
          ))}
        </ul>
      )}
      <div className="jp-row">
        <input
          className="jp-grow"
          type="text"
          id={id}
          name="value"
          aria-label={label}
          placeholder="Type a value, then Enter"
          value={text}
          onChange={(e) => setText(e.target.value)}
          onKeyDown={(e) => {
            if (e.key === "Enter") {
              e.preventDefault();
              addText();
            }
          }}
          onBlur={addText}
        />
        <button type="button" className="jp-btn jp-btn-small" onClick={addText}>
          Add
        </button>
      </div>
    </div>
  );
}

// "in the last N days/hours" (within_hours) and "only since entering the journey".
function EventWindow({ condition, onChange, id }) {
  const hours = condition.within_hours;
  const [unit, setUnit] = useState(typeof hours === "number" && hours % 24 !== 0 ? "hours" : "days");
  const per = unit === "days" ? 24 : 1;
  const amount = typeof hours === "number" ? Math.round((hours / per) * 1e6) / 1e6 : "";
  const setHours = (text, factor) => {
    const n = Number(text);
    const out = { ...condition };
    if (text === "" || !(n > 0)) delete out.within_hours;
    else out.within_hours = n * factor;
    onChange(out);
  };
  return (
    <div>
      <div className="jp-row">
        <label htmlFor={id} className="jp-muted">
          in the last
        </label>
        <input
          className="jp-grow"
          type="number"
          min="0"
          step="any"
          id={id}
          name="within"
          placeholder="any time"
          value={amount}
          onChange={(e) => setHours(e.target.value, per)}
        />
        <select
          className="jp-unit"
          name="within_unit"
          aria-label="unit"
          value={unit}
          onChange={(e) => {
            setUnit(e.target.value);
            if (amount !== "") setHours(String(amount), e.target.value === "days" ? 24 : 1);
          }}
        >
          <option value="days">days</option>
          <option value="hours">hours</option>
        </select>
      </div>
      <label className="jp-check">
        <input
          type="checkbox"
          name="since_entry"
          checked={Boolean(condition.since_entry)}
          onChange={(e) => {
            const out = { ...condition };
            if (e.target.checked) out.since_entry = true;
            else delete out.since_entry;
            onChange(out);
          }}
        />
        only since entering the journey
      </label>
    </div>
  );
}

function ValueControl({ condition, field, onChange, catalog, rowId }) {
  const { type, op } = condition;
  const id = `${rowId}-value`;
  if (type === "segment") {
    return (
      <div>
        <label htmlFor={id} className="jp-muted">
          Segment
        </label>
        <select
          id={id}
          name="segment"
          value={condition.segment ?? ""}
          onChange={(e) => onChange({ ...condition, segment: e.target.value })}
        >
          {!condition.segment && <option value="">— choose a segment —</option>}
          {condition.segment &&
            !(catalog?.segments || []).some((s) => s.key === condition.segment) && (
              <option value={condition.segment}>{`${condition.segment} (missing)`}</option>
            )}
          {(catalog?.segments || []).map((s) => (
            <option key={s.key} value={s.key}>
              {s.name || s.key}
            </option>
          ))}
        </select>
      </div>
    );
  }
  if (type === "event") {
    return <EventWindow condition={condition} onChange={onChange} id={id} />;
  }
  if (op === "exists" || op === "not_exists") return null;
  if (type === "last_message") {
    return (
      <ListInput
        id={id}
        values={condition.value}
        onChange={(value) => onChange({ ...condition, value })}
        label="Statuses"
        choices={
          field?.values?.length
            ? field.values.map((v) => (Array.isArray(v) ? v : [v?.value ?? v, v?.label ?? v]))
            : MESSAGE_STATUSES
        }
      />
    );
  }
  const valueType = field?.valueType;
  if (op === "in" || op === "not_in") {
    const choices = field?.values?.map((v) => (Array.isArray(v) ? v : [v?.value ?? v, v?.label ?? v]));
    return (
      <ListInput
        id={id}
        values={condition.value}
        onChange={(value) => onChange({ ...condition, value })}
        valueType={valueType}
        label="Values"
        choices={choices}
      />
    );
  }
  const labelled = (control) => (
    <div className="jp-row">
      <label htmlFor={id} className="jp-muted">
        Value
      </label>
      {control}
    </div>
  );
  const set = (v) => {
    const out = { ...condition };
    if (v === undefined) delete out.value;
    else out.value = v;
    onChange(out);
  };
  if (valueType === "bool" || valueType === "boolean") {
    return labelled(
      <select
        className="jp-grow"
        id={id}
        name="value"
        value={showValue(condition.value)}
        onChange={(e) => set(e.target.value === "" ? undefined : e.target.value === "true")}
      >
        <option value="">— choose —</option>
        <option value="true">yes</option>
        <option value="false">no</option>
      </select>,
    );
  }
  if (field?.values?.length && type !== "last_message") {
    return labelled(
      <select
        className="jp-grow"
        id={id}
        name="value"
        value={showValue(condition.value)}
        onChange={(e) => set(e.target.value === "" ? undefined : parseValue(e.target.value))}
      >
        <option value="">— choose —</option>
        {field.values.map((v) => {
          const [value, label] = Array.isArray(v) ? v : [v?.value ?? v, v?.label ?? v];
          return (
            <option key={String(value)} value={showValue(value)}>
              {label}
            </option>
          );
        })}
      </select>,
    );
  }
  const inputType =
    valueType === "number" ? "number" : valueType === "date" ? "date" : "text";
  return labelled(
    <input
      className="jp-grow"
      type={inputType}
      step={inputType === "number" ? "any" : undefined}
      id={id}
      name="value"
      value={showValue(condition.value)}
      onChange={(e) =>
        set(e.target.value === "" ? undefined : type === "reply" ? e.target.value : typedValue(e.target.value, valueType))
      }
    />,
  );
}

function ConditionRow({ index, condition, fields, catalog, onChange, onRemove, problems }) {
  const rowId = useId();
  const field = fieldOf(condition, fields);
  const ops = field ? operatorsFor(field, catalog) : [];
  // A comparison the server accepts but this field's type would not suggest (from an
  // import, say) stays shown as it is, never silently replaced.
  if (field && condition?.op && !ops.some((o) => o.op === condition.op)) {
    if ((ACCEPTED[field.type] || []).includes(condition.op)) {
      ops.push({ op: condition.op, label: LABELS[condition.op] || condition.op });
    }
  }
  const groups = [];
  for (const f of fields) {
    let g = groups.find((x) => x.name === f.group);
    if (!g) groups.push((g = { name: f.group, fields: [] }));
    g.fields.push(f);
  }
  const needsName = field && field.name === null && ["attribute", "property", "event"].includes(field.type);
  const nameList = field?.type === "event" ? catalog?.events || [] : field?.type === "attribute" ? (catalog?.attributes || []).map((a) => (typeof a === "string" ? a : a.name)) : [];
  const opKnown = ops.some((o) => o.op === condition?.op);
  return (
    <li className="jp-cond" data-testid="condition-row">
      <div className="jp-cond-head">
        <span>Condition {index + 1}</span>
        <button
          type="button"
          className="jp-link"
          aria-label={`Remove condition ${index + 1}`}
          onClick={onRemove}
        >
          Remove
        </button>
      </div>
      <label htmlFor={`${rowId}-field`} className="jp-muted">
        Field
      </label>
      <select
        id={`${rowId}-field`}
        name="condition_field"
        value={field?.id ?? ""}
        onChange={(e) => {
          const next = fields.find((f) => f.id === e.target.value);
          if (next) onChange(conditionFor(next, condition, catalog));
        }}
      >
        {!field && <option value="">— choose what to check —</option>}
        {groups.map((g) => (
          <optgroup key={g.name} label={g.name}>
            {g.fields.map((f) => (
              <option key={f.id} value={f.id}>
                {f.label}
              </option>
            ))}
          </optgroup>
        ))}
      </select>
      {needsName && (
        <div className="jp-row">
          <label htmlFor={`${rowId}-name`} className="jp-muted">
            {field.type === "event" ? "Event" : "Name"}
          </label>
          <input
            className="jp-grow"
            type="text"
            id={`${rowId}-name`}
            name="condition_name"
            autoComplete="off"
            list={nameList.length ? `${rowId}-names` : undefined}
            value={condition.name ?? ""}
            placeholder={field.type === "event" ? "e.g. order.completed" : "e.g. city"}
            onChange={(e) => onChange({ ...condition, name: e.target.value })}
          />
          {nameList.length > 0 && (
            <datalist id={`${rowId}-names`}>
              {nameList.map((n) => (
                <option key={n} value={n} />
              ))}
            </datalist>
          )}
        </div>
      )}
      {field && (
        <div className="jp-row">
          <label htmlFor={`${rowId}-op`} className="jp-muted" style={{ flex: "0 0 auto" }}>
            {field.type === "segment" ? "The customer" : "Comparison"}
          </label>
          <select
            className="jp-grow"
            id={`${rowId}-op`}
            name="op"
            value={opKnown ? condition.op : ""}
            onChange={(e) => {
              const op = e.target.value;
              const out = { ...condition, op };
              const wasList = condition.op === "in" || condition.op === "not_in";
              const isList = op === "in" || op === "not_in";
              if (op === "exists" || op === "not_exists") delete out.value;
              else if (isList && !wasList && field.type !== "segment" && field.type !== "last_message") {
                out.value = condition.value === undefined || condition.value === "" ? [] : [condition.value];
              } else if (!isList && wasList && Array.isArray(condition.value)) {
                if (condition.value.length) out.value = condition.value[0];
                else delete out.value;
              }
              onChange(out);
            }}
          >
            {!opKnown && <option value="">— choose —</option>}
            {ops.map((o) => (
              <option key={o.op} value={o.op}>
                {o.label}
              </option>
            ))}
          </select>
        </div>
      )}
      {field && (
        <ValueControl condition={condition} field={field} onChange={onChange} catalog={catalog} rowId={rowId} />
      )}
      {problems?.map((m) => (
        <p className="jp-error" key={m}>
          {m}
        </p>
      ))}
    </li>
  );
}

export function ConditionsEditor({
  value,
  catalog,
  onChange,
  types,
  match,
  onMatchChange,
  problems,
  id,
  name = "conditions",
}) {
  const ownId = useId();
  const groupId = id || ownId;
  const list = Array.isArray(value) ? value : [];
  const fields = conditionFields(catalog, types);
  const rowProblems = (i) => (problems || []).filter((p) => p.index === i).map((p) => p.message);
  const setRow = (i, c) => onChange(list.map((old, j) => (j === i ? c : old)));
  return (
    <div className="jp-conditions" data-name={name} role="group" aria-labelledby={`${groupId}-label`}>
      {onMatchChange && (
        <fieldset className="jp-match" data-testid="field-match">
          <legend className="jp-muted" style={{ fontWeight: 400 }}>
            Holds when
          </legend>
          {[
            ["all", "all of these are true"],
            ["any", "any of these is true"],
          ].map(([v, text]) => (
            <label className="jp-check" key={v}>
              <input
                type="radio"
                name="match"
                value={v}
                checked={(match || "all") === v}
                onChange={() => onMatchChange(v)}
              />
              {text}
            </label>
          ))}
        </fieldset>
      )}
      {list.length === 0 && <p className="jp-muted">No conditions yet.</p>}
      <ol className="jp-cond-list">
        {list.map((c, i) => (
          <ConditionRow
            // Rows have no identity of their own; the index is what the server names too.
            key={i}
            index={i}
            condition={c}
            fields={fields}
            catalog={catalog}
            onChange={(next) => setRow(i, next)}
            onRemove={() => onChange(list.filter((_, j) => j !== i))}
            problems={rowProblems(i)}
          />
        ))}
      </ol>
      <button
        type="button"
        className="jp-btn"
        data-testid="add-condition"
        onClick={() => {
          const first = fields[0];
          onChange([...list, first ? conditionFor(first, null, catalog) : { type: "attribute", name: "", op: "eq" }]);
        }}
      >
        Add a condition
      </button>
      {(problems || [])
        .filter((p) => p.index === null || p.index === undefined || p.index >= list.length)
        .map((p) => (
          <p className="jp-error" key={p.message}>
            {p.message}
          </p>
        ))}
    </div>
  );
}
