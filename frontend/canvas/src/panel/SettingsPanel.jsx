// The journey's own settings: name, topic, priority, who may enter and how often, the
// trigger (its kind, then that kind's fields from the catalog), exit events, the goal
// and what happens to a message that is held.
import { useId } from "react";
import { DurationInput, Field, isShown } from "./fields.jsx";
import { placeProblems } from "./problems.js";
import { PanelHead, TopProblems, onEscape } from "./StepPanel.jsx";
import { useStyles } from "./styles.js";
import { withSetting } from "./units.js";

const ENTRY_CHOICES = [
  { value: "once", label: "Only once per customer, ever" },
  { value: "once_per", label: "At most once every few days" },
  { value: "every_time", label: "Every time the trigger fires" },
];
const ON_HOLD_CHOICES = [
  { value: "defer", label: "Send it when allowed (after quiet hours or once under the cap)" },
  { value: "skip", label: "Skip it if it cannot go within its time to live" },
];
const JOURNEY_SPECS = {
  name: { name: "name", label: "Journey name", type: "text", required: true },
  topic: {
    name: "topic",
    label: "Topic",
    type: "topic",
    required: true,
    help: "What the messages are about; customers opt in or out per topic.",
  },
  priority: {
    name: "priority",
    label: "Priority",
    type: "number",
    min: 0,
    max: 9,
    help: "0 (lowest) to 9 (highest): which message goes first when caps allow only one.",
  },
  entry_rule: {
    name: "entry_rule",
    label: "A customer may enter",
    type: "select",
    required: true,
    choices: ENTRY_CHOICES,
  },
  entry_days: {
    name: "entry_days",
    label: "Days before they may enter again",
    type: "number",
    min: 1,
    required: true,
  },
  on_hold: {
    name: "on_hold",
    label: "When quiet hours or a cap hold a message",
    type: "select",
    required: true,
    choices: ON_HOLD_CHOICES,
  },
};

function Problems({ messages }) {
  return (messages || []).map((m) => (
    <p className="jp-error" key={m}>
      {m}
    </p>
  ));
}

function ExitEvents({ value, catalog, onChange, messages }) {
  const id = useId();
  const rows = Array.isArray(value) ? value : [];
  const events = catalog?.events || [];
  const setRow = (i, row) => onChange(rows.map((r, j) => (j === i ? row : r)));
  return (
    <div className="jp-field" data-testid="field-exit_events" role="group" aria-labelledby={`${id}-label`}>
      <div className="jp-label" id={`${id}-label`}>
        Leave the journey when
      </div>
      {rows.length === 0 && <p className="jp-muted">No exit events: customers leave at the end.</p>}
      {rows.map((row, i) => (
        // Rows have no identity of their own; the index is what the server names too.
        <div className="jp-exit-row" key={i} data-testid="exit-event-row">
          <div>
            <label htmlFor={`${id}-${i}-event`}>Event</label>
            <input
              type="text"
              id={`${id}-${i}-event`}
              name="exit_event"
              list={events.length ? `${id}-events` : undefined}
              autoComplete="off"
              value={row.event || ""}
              onChange={(e) => setRow(i, { ...row, event: e.target.value })}
            />
          </div>
          <div>
            <label htmlFor={`${id}-${i}-match`}>only if this property matches (optional)</label>
            <input
              type="text"
              id={`${id}-${i}-match`}
              name="exit_match"
              placeholder="e.g. sku"
              value={row.match || ""}
              onChange={(e) => {
                const next = { ...row, match: e.target.value };
                if (!e.target.value) delete next.match;
                setRow(i, next);
              }}
            />
          </div>
          <button
            type="button"
            className="jp-link"
            aria-label={`Remove exit event ${i + 1}`}
            onClick={() => onChange(rows.filter((_, j) => j !== i))}
          >
            Remove
          </button>
        </div>
      ))}
      {events.length > 0 && (
        <datalist id={`${id}-events`}>
          {events.map((e) => (
            <option key={e} value={e} />
          ))}
        </datalist>
      )}
      <button type="button" className="jp-btn" onClick={() => onChange([...rows, { event: "" }])}>
        Add an exit event
      </button>
      <p className="jp-help">
        With a property, only an event about the same thing (e.g. the same sku as the one they
        entered with) takes them out.
      </p>
      <Problems messages={messages} />
    </div>
  );
}

function Goal({ value, catalog, onChange, messages }) {
  const id = useId();
  const goal = value && typeof value === "object" ? value : null;
  const events = catalog?.events || [];
  return (
    <div className="jp-field" data-testid="field-goal" role="group" aria-labelledby={`${id}-label`}>
      <div className="jp-label" id={`${id}-label`}>
        Goal
      </div>
      <label htmlFor={`${id}-event`} className="jp-muted">
        The event that counts as a conversion
      </label>
      <input
        type="text"
        id={`${id}-event`}
        name="goal_event"
        list={events.length ? `${id}-events` : undefined}
        autoComplete="off"
        placeholder="No goal"
        value={goal?.event || ""}
        onChange={(e) => {
          const event = e.target.value;
          if (!event) onChange(null);
          else onChange({ within_hours: null, exits: true, ...(goal || {}), event });
        }}
      />
      {events.length > 0 && (
        <datalist id={`${id}-events`}>
          {events.map((e) => (
            <option key={e} value={e} />
          ))}
        </datalist>
      )}
      {goal && (
        <>
          <label htmlFor={`${id}-within`} className="jp-muted">
            Counts within (empty: any time while in the journey)
          </label>
          <DurationInput
            id={`${id}-within`}
            name="goal_within_hours"
            value={goal.within_hours ?? undefined}
            unit="hours"
            onChange={(v) => onChange({ ...goal, within_hours: v ?? null })}
          />
          <label className="jp-check">
            <input
              type="checkbox"
              name="goal_exits"
              checked={goal.exits !== false}
              onChange={(e) => onChange({ ...goal, exits: e.target.checked })}
            />
            A customer who converts leaves the journey
          </label>
        </>
      )}
      <Problems messages={messages} />
    </div>
  );
}

export function SettingsPanel({ definition, catalog, problems, onChange, onClose }) {
  useStyles();
  if (!definition) return null;
  const { steps: _steps, ...settings } = definition;
  const update = (patch) => onChange({ ...settings, ...patch });
  const trigger = settings.trigger || {};
  const kinds = catalog?.trigger_kinds || [];
  const kind = kinds.find((k) => k.kind === trigger.kind);
  const triggerSpecs = kind?.fields || [];
  const entry = settings.entry || {};
  // The journey's own problems (a loop without a wait among them: field "steps").
  const journeyProblems = (problems || []).filter((p) => p.step == null);
  const placed = placeProblems(
    journeyProblems,
    "",
    ["name", "topic", "priority", "entry", "trigger", "exit_events", "goal", "on_hold"],
  );
  // Problems inside the trigger go next to the trigger's own fields.
  const inTrigger = placeProblems(
    journeyProblems,
    "trigger",
    ["kind", ...triggerSpecs.map((s) => s.name)],
  );
  const entryProblems = journeyProblems
    .filter((p) => p.field === "entry.days" || p.field === "entry.rule" || p.field === "entry")
    .map((p) => p.message);
  const top = placed.top;
  const triggerKindProblems = [
    ...(inTrigger.byField.kind || []),
    ...journeyProblems.filter((p) => p.field === "trigger").map((p) => p.message),
  ];
  return (
    <aside className="jp-panel" data-testid="side-panel" aria-label="Journey settings" onKeyDown={onEscape(onClose)}>
      <PanelHead title="Journey settings" subtitle={settings.key} onClose={onClose} />
      <TopProblems messages={top} />
      <Field
        spec={JOURNEY_SPECS.name}
        value={settings.name}
        values={settings}
        catalog={catalog}
        onChange={(v) => update({ name: v ?? "" })}
        messages={placed.byField.name}
      />
      <Field
        spec={JOURNEY_SPECS.topic}
        value={settings.topic ?? undefined}
        values={settings}
        catalog={catalog}
        onChange={(v) => update({ topic: v ?? null })}
        messages={placed.byField.topic}
      />
      <Field
        spec={JOURNEY_SPECS.priority}
        value={settings.priority}
        values={settings}
        catalog={catalog}
        onChange={(v) => update({ priority: v })}
        messages={placed.byField.priority}
      />

      <section className="jp-section" aria-label="Trigger">
        <h3>Starts when</h3>
        <Field
          spec={{
            name: "trigger_kind",
            label: "The journey starts when",
            type: "select",
            required: true,
            choices: kinds.map((k) => ({ value: k.kind, label: k.label || k.kind })),
          }}
          value={trigger.kind}
          values={{}}
          catalog={catalog}
          onChange={(v) => {
            if (v && v !== trigger.kind) update({ trigger: { kind: v } });
          }}
          messages={triggerKindProblems}
        />
        {triggerSpecs
          .filter((s) => isShown(s, trigger, triggerSpecs))
          .map((spec) => (
            <Field
              key={`${trigger.kind}-${spec.name}`}
              spec={spec}
              value={trigger[spec.name]}
              values={trigger}
              catalog={catalog}
              onChange={(v) => update({ trigger: { ...withSetting(trigger, spec.name, v), kind: trigger.kind } })}
              messages={inTrigger.byField[spec.name]}
              rowProblems={inTrigger.rows[spec.name]}
            />
          ))}
        <TopProblems
          messages={inTrigger.top.filter((m) => !triggerKindProblems.includes(m))}
        />
      </section>

      <section className="jp-section" aria-label="Entry">
        <h3>Who may enter</h3>
        <Field
          spec={JOURNEY_SPECS.entry_rule}
          value={entry.rule || "every_time"}
          values={{}}
          catalog={catalog}
          onChange={(v) =>
            update({
              entry: { rule: v || "every_time", days: v === "once_per" ? entry.days || 30 : null },
            })
          }
          messages={entry.rule === "once_per" ? [] : entryProblems}
        />
        {entry.rule === "once_per" && (
          <Field
            spec={JOURNEY_SPECS.entry_days}
            value={entry.days ?? undefined}
            values={{}}
            catalog={catalog}
            onChange={(v) => update({ entry: { ...entry, days: v ?? null } })}
            messages={entryProblems}
          />
        )}
      </section>

      <section className="jp-section" aria-label="Leaving and converting">
        <h3>Leaving and converting</h3>
        <ExitEvents
          value={settings.exit_events}
          catalog={catalog}
          onChange={(rows) => update({ exit_events: rows })}
          messages={[
            ...(placed.byField.exit_events || []),
            ...(placed.rows.exit_events || []).map((r) => `Row ${r.index + 1}: ${r.message}`),
          ]}
        />
        <Goal
          value={settings.goal}
          catalog={catalog}
          onChange={(goal) => update({ goal })}
          messages={placed.byField.goal}
        />
      </section>

      <section className="jp-section" aria-label="Held messages">
        <h3>Held messages</h3>
        <Field
          spec={JOURNEY_SPECS.on_hold}
          value={settings.on_hold || "defer"}
          values={{}}
          catalog={catalog}
          onChange={(v) => update({ on_hold: v || "defer" })}
          messages={placed.byField.on_hold}
        />
      </section>
    </aside>
  );
}
