// Durations, values and problems: small conversions the panel's controls share.

export const UNIT_SECONDS = { seconds: 1, minutes: 60, hours: 3600, days: 86400 };
export const UNIT_CHOICES = ["minutes", "hours", "days"];

// The unit a duration setting is stored in: the spec says so, else its name does
// ("timeout_minutes", "ttl_hours", "within_hours"), else minutes.
export function storedUnit(spec) {
  if (spec.unit && UNIT_SECONDS[spec.unit]) return spec.unit;
  const name = String(spec.name || "");
  for (const unit of ["seconds", "minutes", "hours", "days"]) {
    if (name === unit || name.endsWith(`_${unit}`)) return unit;
  }
  return "minutes";
}

// The largest unit that shows a stored amount as a whole number: 2880 minutes -> 2 days.
export function displayUnit(value, stored) {
  if (typeof value !== "number" || !Number.isFinite(value) || value === 0) {
    return stored === "seconds" ? "seconds" : stored === "minutes" ? "hours" : stored;
  }
  const seconds = Math.abs(value) * UNIT_SECONDS[stored];
  for (const unit of ["days", "hours", "minutes"]) {
    if (seconds % UNIT_SECONDS[unit] === 0) return unit;
  }
  return stored;
}

export function toUnit(value, from, to) {
  const out = (value * UNIT_SECONDS[from]) / UNIT_SECONDS[to];
  return Math.round(out * 1e6) / 1e6;
}

// What a marketer types, as JSON would hold it: numbers and true/false are typed
// (as the admin's form reads a value).
export function parseValue(text) {
  const t = String(text).trim();
  if (/^-?\d+(\.\d+)?$/.test(t)) return Number(t);
  if (t.toLowerCase() === "true") return true;
  if (t.toLowerCase() === "false") return false;
  return t;
}

export function typedValue(text, valueType) {
  const t = String(text);
  if (valueType === "number") {
    const n = Number(t.trim());
    return t.trim() !== "" && Number.isFinite(n) ? n : t;
  }
  if (valueType === "bool" || valueType === "boolean") {
    if (t === "true") return true;
    if (t === "false") return false;
    return t;
  }
  if (!valueType || valueType === "any" || valueType === "unknown") return parseValue(t);
  return t;
}

export function showValue(value) {
  if (value === undefined || value === null) return "";
  if (typeof value === "boolean") return value ? "true" : "false";
  return String(value);
}

// A config without the settings left empty: the server fills its own defaults.
export function withSetting(config, name, value) {
  const out = { ...(config || {}) };
  if (value === undefined || value === null || value === "") delete out[name];
  else out[name] = value;
  return out;
}

// Where a problem points inside a step or the settings: "steps.remind.config.template"
// -> "template"; "steps.check.conditions[1]" -> {base: "conditions", index: 1}.
export function problemPath(field, prefix) {
  let rest = String(field || "");
  if (prefix) {
    if (rest === prefix) return { base: "", index: null, rest: "" };
    if (!rest.startsWith(`${prefix}.`)) return null;
    rest = rest.slice(prefix.length + 1);
  }
  if (rest.startsWith("config.")) rest = rest.slice("config.".length);
  const m = /^([^.[]+)(?:\[(\d+)\])?/.exec(rest);
  if (!m) return { base: "", index: null, rest };
  return { base: m[1], index: m[2] === undefined ? null : Number(m[2]), rest };
}
