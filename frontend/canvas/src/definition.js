// Pure functions over the journey definition (the JSON the API accepts): summaries,
// readable step keys, and the edits the canvas makes (insert, connect, delete).

export const TRIGGER = "__trigger__";

export const KINDS = [
  { kind: "send", label: "Send a message", exits: ["next"] },
  { kind: "wait", label: "Wait", exits: ["next"] },
  { kind: "wait_for_event", label: "Wait for an event", exits: ["next", "alt_next"], exit_labels: ["when it happens", "on timeout"] },
  { kind: "branch", label: "Branch", exits: ["next", "alt_next"], exit_labels: ["yes", "no"] },
  { kind: "split", label: "Random split", exits: ["next", "alt_next"], exit_labels: ["arm A", "arm B"] },
  { kind: "digest", label: "Digest", exits: ["next"] },
  { kind: "update_attribute", label: "Update attribute", exits: ["next"] },
  { kind: "webhook", label: "Webhook", exits: ["next"] },
  { kind: "exit", label: "Exit", exits: [] },
];

export const ICONS = {
  send: "✉",
  wait: "◔",
  wait_for_event: "◎",
  branch: "⋔",
  split: "⚖",
  digest: "▤",
  update_attribute: "✎",
  webhook: "⇄",
  exit: "■",
  trigger: "▶",
};

/** The catalog's kind specs by kind, falling back on the built-in list. */
export function kindsOf(catalog) {
  const byKind = {};
  for (const k of KINDS) byKind[k.kind] = k;
  for (const k of catalog?.step_kinds || []) byKind[k.kind] = { ...byKind[k.kind], ...k };
  return byKind;
}

export function exitsOf(kindSpec) {
  return kindSpec?.exits || ["next"];
}

export function exitLabel(kindSpec, exit) {
  const exits = exitsOf(kindSpec);
  if (exits.length < 2) return "";
  const labels = kindSpec.exit_labels || [];
  return labels[exits.indexOf(exit)] || "";
}

export function duration(minutes) {
  const m = Number(minutes);
  if (!Number.isFinite(m) || m <= 0) return "";
  const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;
  if (m % 10080 === 0 && m >= 10080) return plural(m / 10080, "week");
  if (m % 1440 === 0) return plural(m / 1440, "day");
  if (m % 60 === 0) return plural(m / 60, "hour");
  return plural(m, "minute");
}

function channelWords(channel) {
  if (!channel || channel === "preferred") return "on their preferred channel";
  return `by ${channel}`;
}

/** One line saying what a step does, in plain words. */
export function summary(step) {
  const c = step.config || {};
  switch (step.kind) {
    case "send":
      return c.template ? `Send '${c.template}' ${channelWords(c.channel)}` : "Choose a template";
    case "digest": {
      const parts = [];
      if (c.window_minutes) parts.push(`every ${duration(c.window_minutes)}`);
      if (c.count) parts.push(`after ${c.count} messages`);
      return c.template
        ? `Collect '${c.template}' ${parts.join(" or ")}`.trim()
        : "Choose a template";
    }
    case "wait": {
      const mode = c.mode || "duration";
      if (mode === "time_of_day") return c.time ? `Wait until ${c.time}` : "Wait until a time of day";
      if (mode === "until_date") {
        const off = Number(c.offset_minutes || 0);
        const shift = off ? ` ${duration(Math.abs(off))} ${off < 0 ? "before" : "after"}` : "";
        return c.attribute ? `Wait until${shift} ${c.attribute}` : "Wait until a date";
      }
      return c.minutes ? `Wait ${duration(c.minutes)}` : "Say how long to wait";
    }
    case "wait_for_event":
      return c.event
        ? `Wait for '${c.event}'${c.timeout_minutes ? ` up to ${duration(c.timeout_minutes)}` : ""}`
        : "Name the event to wait for";
    case "branch": {
      const n = (c.conditions || []).length;
      if (!n) return "Add a condition";
      return `${n} condition${n === 1 ? "" : "s"}, ${c.match === "any" ? "any" : "all"} must hold`;
    }
    case "split": {
      const p = Number(c.percent);
      return Number.isFinite(p) && p > 0 ? `A ${p}% / B ${100 - p}%` : "Set arm A's share";
    }
    case "update_attribute":
      if (!c.name) return "Name the attribute";
      return c.from_context
        ? `Set ${c.name} from ${c.from_context}`
        : `Set ${c.name} = ${JSON.stringify(c.value ?? "")}`;
    case "webhook": {
      try {
        return `Call ${new URL(c.url).host}`;
      } catch {
        return "Give the webhook's URL";
      }
    }
    case "exit":
      return "End of the journey";
    default:
      return step.kind;
  }
}

export function triggerSummary(trigger, catalog) {
  const t = trigger || {};
  const spec = (catalog?.trigger_kinds || []).find((k) => k.kind === t.kind);
  const name = spec?.label || t.kind || "Trigger";
  if (t.event) return `${name}: ${t.event}`;
  if (t.segment) return `${name}: ${t.segment}`;
  return name;
}

function base(kind) {
  return String(kind).replace(/_/g, "-");
}

/** A readable key not used yet: send-1, send-2, ... */
export function newKey(steps, kind) {
  const used = new Set(steps.map((s) => s.key));
  for (let n = 1; ; n += 1) {
    const key = `${base(kind)}-${n}`;
    if (!used.has(key)) return key;
  }
}

export function defaultConfig(kind) {
  switch (kind) {
    case "send":
      return { channel: "preferred" };
    case "digest":
      return { channel: "preferred" };
    case "wait":
      return { mode: "duration" };
    case "branch":
      return { match: "all", conditions: [] };
    case "split":
      return { percent: 50 };
    default:
      return {};
  }
}

export function makeStep(steps, kind) {
  return { key: newKey(steps, kind), kind, label: "", next: "", alt_next: "", config: defaultConfig(kind) };
}

function replaceStep(def, key, fn) {
  return { ...def, steps: def.steps.map((s) => (s.key === key ? fn(s) : s)) };
}

/** Insert a new step of ``kind`` on the edge ``edgeId`` ("<from>:<exit>"): from -> new -> old. */
export function insertOnEdge(def, edgeId, kind) {
  const [from, exit] = splitEdgeId(edgeId);
  const step = makeStep(def.steps, kind);
  if (from === TRIGGER) {
    const old = def.steps[0];
    step.next = old && kind !== "exit" ? old.key : "";
    return { definition: { ...def, steps: [step, ...def.steps] }, key: step.key };
  }
  const source = def.steps.find((s) => s.key === from);
  if (!source) return { definition: def, key: null };
  if (kind !== "exit") step.next = source[exit] || "";
  const at = def.steps.indexOf(source) + 1;
  const steps = [...def.steps.slice(0, at), step, ...def.steps.slice(at)].map((s) =>
    s.key === from ? { ...s, [exit]: step.key } : s,
  );
  return { definition: { ...def, steps }, key: step.key };
}

/** Add a step nobody leads to yet (the entry step when the journey has none). */
export function addUnconnected(def, kind) {
  const step = makeStep(def.steps, kind);
  return { definition: { ...def, steps: [...def.steps, step] }, key: step.key };
}

/** Insert after a step (on its "next" exit), or, with none chosen, at the end of the main path. */
export function insertAfter(def, key, kind) {
  if (!def.steps.length) return addUnconnected(def, kind);
  if (key === TRIGGER) return insertOnEdge(def, `${TRIGGER}:next`, kind);
  let from = def.steps.find((s) => s.key === key);
  if (!from) {
    const byKey = Object.fromEntries(def.steps.map((s) => [s.key, s]));
    const seen = new Set();
    from = def.steps[0];
    while (from.next && byKey[from.next] && !seen.has(from.next)) {
      seen.add(from.key);
      from = byKey[from.next];
    }
  }
  if (from.kind === "exit") return addUnconnected(def, kind);
  return insertOnEdge(def, `${from.key}:next`, kind);
}

export function splitEdgeId(edgeId) {
  const at = edgeId.lastIndexOf(":");
  return [edgeId.slice(0, at), edgeId.slice(at + 1)];
}

/** Point exit ``exit`` of ``from`` at ``to`` (the trigger's exit makes ``to`` the entry). */
export function connect(def, from, exit, to) {
  if (from === TRIGGER) {
    const target = def.steps.find((s) => s.key === to);
    if (!target) return def;
    return { ...def, steps: [target, ...def.steps.filter((s) => s.key !== to)] };
  }
  if (from === to) return def;
  return replaceStep(def, from, (s) => ({ ...s, [exit]: to }));
}

export function disconnect(def, edgeId) {
  const [from, exit] = splitEdgeId(edgeId);
  if (from === TRIGGER) return def; // the first step is always the entry
  return replaceStep(def, from, (s) => ({ ...s, [exit]: "" }));
}

/** Remove a step; its single predecessor (or the trigger) is linked on to its next step. */
export function deleteStep(def, key) {
  const gone = def.steps.find((s) => s.key === key);
  if (!gone) return def;
  const links = [];
  for (const s of def.steps) {
    if (s.key === key) continue;
    for (const exit of ["next", "alt_next"]) if (s[exit] === key) links.push([s.key, exit]);
  }
  const isEntry = def.steps[0]?.key === key;
  const onward = gone.next && gone.next !== key ? gone.next : "";
  let steps = def.steps.filter((s) => s.key !== key);
  steps = steps.map((s) => {
    let out = s;
    for (const exit of ["next", "alt_next"]) {
      if (s[exit] === key) {
        const relink = !isEntry && links.length === 1 ? onward : "";
        out = { ...out, [exit]: relink };
      }
    }
    return out;
  });
  if (isEntry && onward && links.length === 0) {
    const entry = steps.find((s) => s.key === onward);
    steps = [entry, ...steps.filter((s) => s.key !== onward)];
  }
  return { ...def, steps };
}

/** Replace a step from the side panel; a new key is carried to every link to it. */
export function updateStep(def, oldKey, step) {
  const renamed = step.key !== oldKey;
  return {
    ...def,
    steps: def.steps.map((s) => {
      if (s.key === oldKey) return step;
      if (!renamed) return s;
      return {
        ...s,
        next: s.next === oldKey ? step.key : s.next,
        alt_next: s.alt_next === oldKey ? step.key : s.alt_next,
      };
    }),
  };
}

/** The steps an arrow key moves between: exits out, predecessors in. */
export function neighbours(def, key) {
  const out = [];
  if (key === TRIGGER) {
    if (def.steps[0]) out.push(def.steps[0].key);
    return { out, in: [] };
  }
  const step = def.steps.find((s) => s.key === key);
  if (step) for (const exit of ["next", "alt_next"]) if (step[exit]) out.push(step[exit]);
  const incoming = def.steps.filter((s) => s.next === key || s.alt_next === key).map((s) => s.key);
  if (def.steps[0]?.key === key) incoming.unshift(TRIGGER);
  return { out, in: incoming };
}
