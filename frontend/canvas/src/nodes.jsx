// The canvas's node and edge components: a step card and an edge drawn along ELK's route.
import { BaseEdge, EdgeLabelRenderer, Handle, Position } from "@xyflow/react";
import { ICONS } from "./definition.js";
import { handleFraction } from "./layout.js";

function Counts({ counts }) {
  if (!counts) return null;
  return (
    <div className="jc-counts" data-testid="node-counts">
      <span title="entered">{counts.entered ?? 0} in</span>
      <span title="waiting here now">{counts.waiting ?? 0} waiting</span>
      <span title="messages sent">{counts.sent ?? 0} sent</span>
      <span title="converted (reached the goal)">{counts.converted ?? 0} conv.</span>
    </div>
  );
}

function Problems({ problems }) {
  if (!problems?.length) return null;
  const text = problems.map((p) => p.message).join("\n");
  return (
    <span className="jc-problems" data-testid="node-problems" title={text} aria-label={`${problems.length} problems: ${text}`}>
      {problems.length}
    </span>
  );
}

function ExitHandles({ exits, labels }) {
  return exits.map((exit, i) => (
    <Handle
      key={exit}
      id={exit}
      type="source"
      position={Position.Bottom}
      style={{ left: `${handleFraction(exits, exit) * 100}%` }}
      title={labels[i] ? `Exit "${labels[i]}": drag to connect` : "Drag to connect the next step"}
    />
  ));
}

export function StepNode({ data, selected }) {
  return (
    <div className={`jc-node jc-kind-${data.kind}${selected ? " jc-selected" : ""}${data.problems?.length ? " jc-has-problems" : ""}`}>
      <Handle id="in" type="target" position={Position.Top} />
      <div className="jc-node-head">
        <span className="jc-icon" aria-hidden="true">{ICONS[data.kind] || "•"}</span>
        <span className="jc-kind">{data.kindLabel}</span>
        <span className="jc-key">{data.stepKey}</span>
        <Problems problems={data.problems} />
      </div>
      <div className="jc-summary" title={data.summary}>{data.label || data.summary}</div>
      {data.label ? <div className="jc-sub" title={data.summary}>{data.summary}</div> : null}
      <Counts counts={data.counts} />
      <ExitHandles exits={data.exits} labels={data.exitLabels} />
    </div>
  );
}

export function TriggerNode({ data, selected }) {
  return (
    <div className={`jc-node jc-trigger${selected ? " jc-selected" : ""}${data.problems?.length ? " jc-has-problems" : ""}`}>
      <div className="jc-node-head">
        <span className="jc-icon" aria-hidden="true">{ICONS.trigger}</span>
        <span className="jc-kind">Trigger</span>
        <Problems problems={data.problems} />
      </div>
      <div className="jc-summary" title={data.summary}>{data.summary}</div>
      <div className="jc-sub">{data.name}</div>
      <ExitHandles exits={["next"]} labels={[""]} />
    </div>
  );
}

function pathOf(points) {
  return points.map((p, i) => `${i ? "L" : "M"}${p.x},${p.y}`).join(" ");
}

/** An edge along ELK's route (bend points); straight fallback until the next layout. */
export function ElkEdge({ id, data, sourceX, sourceY, targetX, targetY, markerEnd, selected }) {
  const points = data?.points?.length ? data.points : [{ x: sourceX, y: sourceY }, { x: targetX, y: targetY }];
  const label = data?.text;
  const at = data?.labelAt || { x: (sourceX + targetX) / 2, y: (sourceY + targetY) / 2 };
  return (
    <>
      <BaseEdge id={id} path={pathOf(points)} markerEnd={markerEnd} interactionWidth={16} className={selected ? "jc-edge-selected" : ""} />
      {label ? (
        <EdgeLabelRenderer>
          <div
            className={`jc-edge-label nodrag nopan${selected ? " jc-selected" : ""}`}
            data-edge-id={id}
            data-testid="edge-label"
            role="button"
            tabIndex={-1}
            onClick={() => data?.onSelect?.(id)}
            style={{ transform: `translate(-50%, -50%) translate(${at.x}px, ${at.y}px)` }}
          >
            {label}
          </div>
        </EdgeLabelRenderer>
      ) : null}
    </>
  );
}
