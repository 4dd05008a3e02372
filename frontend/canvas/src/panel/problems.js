// Sorting the server's problems ({field, step, message}) onto the fields they concern.
import { problemPath } from "./units.js";

// {top: [message], byField: {name: [message]}, rows: {name: [{index, message}]}} for the
// problems under ``prefix`` ("steps.remind", "trigger") whose field names one of
// ``names``; anything else goes to the top.
export function placeProblems(problems, prefix, names, { aliases = {} } = {}) {
  const top = [];
  const byField = {};
  const rows = {};
  for (const p of problems || []) {
    const path = problemPath(p.field, prefix);
    if (!path) continue;
    const base = aliases[path.base] || path.base;
    if (base && names.includes(base)) {
      if (path.index !== null) {
        (rows[base] ||= []).push({ index: path.index, message: p.message });
      } else {
        (byField[base] ||= []).push(p.message);
      }
    } else {
      top.push(p.message);
    }
  }
  return { top: [...new Set(top)], byField, rows };
}
