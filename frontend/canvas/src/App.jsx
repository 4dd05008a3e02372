// The journey canvas: the definition as a graph (ELK layout), a palette to add steps,
// the side panel to edit one, and the toolbar (save, diff, simulate, publish, versions).
import { useCallback, useEffect, useMemo, useReducer, useRef, useState } from "react";
import {
  Background,
  Controls,
  MarkerType,
  ReactFlow,
  ReactFlowProvider,
  applyNodeChanges,
  useReactFlow,
} from "@xyflow/react";
import { call, errorText } from "./api.js";
import {
  ICONS,
  TRIGGER,
  addUnconnected,
  connect,
  deleteStep,
  disconnect,
  exitLabel,
  exitsOf,
  insertAfter,
  insertOnEdge,
  kindsOf,
  neighbours,
  splitEdgeId,
  summary,
  triggerSummary,
  updateStep,
} from "./definition.js";
import { historyReducer, initialHistory } from "./history.js";
import { NODE_H, NODE_W, edgesOf, layout } from "./layout.js";
import { DiffDrawer, PublishDialog, SimulateDrawer, VersionsDrawer } from "./drawers.jsx";
import { SettingsPanel, StepPanel } from "./panel/index.jsx";

import { ElkEdge, StepNode, TriggerNode } from "./nodes.jsx";

const nodeTypes = { step: StepNode, trigger: TriggerNode };
const edgeTypes = { elk: ElkEdge };

const DRAG_TYPE = "application/x-journey-step";

function endpoint(urls, name) {
  if (urls?.[name]) return urls[name];
  const base = window.location.pathname.replace(/[^/]*$/, "");
  return `${base}${name}.json`;
}

function isTyping(target) {
  if (!target || !target.closest) return false;
  return Boolean(target.closest("input, textarea, select, [contenteditable=true]"));
}

function distanceToSegment(p, a, b) {
  const dx = b.x - a.x;
  const dy = b.y - a.y;
  const len = dx * dx + dy * dy;
  const t = len ? Math.max(0, Math.min(1, ((p.x - a.x) * dx + (p.y - a.y) * dy) / len)) : 0;
  return Math.hypot(p.x - (a.x + t * dx), p.y - (a.y + t * dy));
}

function Palette({ kinds, onAdd }) {
  return (
    <nav className="jc-palette" aria-label="Steps to add">
      <h3>Add a step</h3>
      <p className="jc-hint">Drag onto an arrow to insert, onto a step to add after it, or press Enter to add after the selected step.</p>
      {Object.values(kinds).map((k) => (
        <div
          key={k.kind}
          className={`jc-palette-item jc-kind-${k.kind}`}
          data-testid={`palette-${k.kind}`}
          role="button"
          tabIndex={0}
          draggable
          title={k.label}
          onDragStart={(e) => {
            e.dataTransfer.setData(DRAG_TYPE, k.kind);
            e.dataTransfer.setData("text/plain", k.kind);
            e.dataTransfer.effectAllowed = "copy";
          }}
          onClick={() => onAdd(k.kind)}
          onKeyDown={(e) => {
            if (e.key === "Enter" || e.key === " ") {
              e.preventDefault();
              onAdd(k.kind);
            }
          }}
        >
          <span className="jc-icon" aria-hidden="true">{ICONS[k.kind] || "•"}</span>
          {k.label}
        </div>
      ))}
    </nav>
  );
}

function Canvas({ initial }) {
  const { journey: initialJourney, catalog, urls } = initial;
  const flow = useReactFlow();
  const kinds = useMemo(() => kindsOf(catalog), [catalog]);
  const [history, dispatch] = useReducer(historyReducer, initial.draft, initialHistory);
  const definition = history.present;
  const [journey, setJourney] = useState(initialJourney);
  const [saved, setSaved] = useState(() => JSON.stringify(initial.draft));
  const [problems, setProblems] = useState(initial.problems || []);
  const [selection, setSelection] = useState(null); // {type: "node"|"edge", id}
  const [panelOpen, setPanelOpen] = useState(false);
  const [drawer, setDrawer] = useState(null);
  const [publishing, setPublishing] = useState(false);
  const [status, setStatus] = useState("");
  const [countsOf, setCountsOf] = useState(initialJourney?.published_version ? "published" : "draft");
  const [counts, setCounts] = useState(null);
  const [laid, setLaid] = useState(null);
  const [rfNodes, setRfNodes] = useState([]);
  const fitted = useRef(false);
  const fittedTo = useRef(null);
  const wrapper = useRef(null);
  const canvasEl = useRef(null);
  const dirty = JSON.stringify(definition) !== saved;

  const change = useCallback((next, group) => dispatch({ type: "change", definition: next, group }), []);

  // --- counts -------------------------------------------------------------------
  const loadCounts = useCallback(async () => {
    const result = await call(`${endpoint(urls, "counts")}?of=${countsOf}`);
    setCounts(result.ok ? result.data : null);
  }, [urls, countsOf]);
  useEffect(() => {
    loadCounts();
  }, [loadCounts]);

  // --- live validation (debounced), the server's own rules ------------------------
  useEffect(() => {
    let stale = false;
    const timer = setTimeout(async () => {
      const result = await call(endpoint(urls, "validate"), { method: "POST", body: { definition } });
      if (stale) return;
      if (result.ok) setProblems(result.data.problems || []);
      else if (result.data?.problems) setProblems(result.data.problems);
    }, 400);
    return () => {
      stale = true;
      clearTimeout(timer);
    };
  }, [definition, urls]);

  // --- graph and layout ------------------------------------------------------------
  const edges = useMemo(() => {
    return edgesOf(definition, kinds).map((e) => {
      let count = null;
      if (counts) {
        count = e.source === TRIGGER
          ? counts.steps?.[e.target]?.entered ?? 0
          : counts.edges?.[`${e.source}->${e.target}`] ?? 0;
      }
      const text = [e.label, count === null ? "" : String(count)].filter(Boolean).join(" · ");
      return { ...e, text };
    });
  }, [definition, kinds, counts]);

  useEffect(() => {
    let stale = false;
    layout(definition, kinds, edges).then(
      (result) => {
        if (!stale) setLaid({ ...result, definition, edges });
      },
      (error) => setStatus(`Layout failed: ${error.message}`),
    );
    return () => {
      stale = true;
    };
  }, [definition, kinds, edges]);

  const problemsByStep = useMemo(() => {
    const by = {};
    for (const p of problems) {
      const key = p.step || TRIGGER;
      (by[key] ||= []).push(p);
    }
    return by;
  }, [problems]);

  const selectedNode = selection?.type === "node" ? selection.id : null;
  const selectedEdge = selection?.type === "edge" ? selection.id : null;

  useEffect(() => {
    if (!laid) return;
    const pos = laid.positions;
    const make = [
      {
        id: TRIGGER,
        type: "trigger",
        position: pos[TRIGGER] || { x: 0, y: 0 },
        data: {
          summary: triggerSummary(laid.definition.trigger, catalog),
          name: laid.definition.name || "",
          problems: problemsByStep[TRIGGER] || [],
        },
      },
      ...laid.definition.steps.map((s) => {
        const spec = kinds[s.kind] || {};
        const exits = exitsOf(spec);
        return {
          id: s.key,
          type: "step",
          position: pos[s.key] || { x: 0, y: 0 },
          ariaLabel: `${spec.label || s.kind} step ${s.key}: ${summary(s)}`,
          data: {
            stepKey: s.key,
            kind: s.kind,
            kindLabel: spec.label || s.kind,
            label: s.label,
            summary: summary(s),
            exits,
            exitLabels: exits.map((x) => exitLabel(spec, x)),
            counts: counts ? counts.steps?.[s.key] || { entered: 0, waiting: 0, sent: 0, converted: 0 } : null,
            problems: problemsByStep[s.key] || [],
          },
        };
      }),
    ].map((n) => ({ ...n, width: NODE_W, height: NODE_H, selected: n.id === selectedNode, draggable: false }));
    // Keep what React Flow measured, so the edges stay drawn while it re-renders.
    setRfNodes((previous) => {
      const measured = Object.fromEntries(previous.map((n) => [n.id, n.measured]));
      return make.map((n) => (measured[n.id] ? { ...n, measured: measured[n.id] } : n));
    });
  }, [laid, problemsByStep, counts, kinds, catalog, selectedNode]);

  const selectEdge = useCallback((id) => setSelection({ type: "edge", id }), []);
  const rfEdges = useMemo(() => {
    if (!laid) return [];
    return laid.edges
      .filter((e) => laid.positions[e.source] && laid.positions[e.target])
      .map((e) => ({
        id: e.id,
        source: e.source,
        target: e.target,
        sourceHandle: e.exit,
        targetHandle: "in",
        type: "elk",
        selected: e.id === selectedEdge,
        reconnectable: e.source !== TRIGGER,
        ariaLabel: e.label ? `${e.source} ${e.label} to ${e.target}` : `${e.source} to ${e.target}`,
        markerEnd: { type: MarkerType.ArrowClosed, width: 18, height: 18 },
        data: {
          points: laid.routes[e.id]?.points,
          labelAt: laid.routes[e.id]?.label,
          text: e.text,
          exit: e.exit,
          onSelect: selectEdge,
        },
      }));
  }, [laid, selectedEdge, selectEdge]);

  // Fit the laid-out graph (from ELK's positions, so it needs no measured nodes).
  const fit = useCallback(
    (duration = 0) => {
      if (!laid) return;
      const all = Object.values(laid.positions);
      if (!all.length) return;
      const x = Math.min(...all.map((p) => p.x));
      const y = Math.min(...all.map((p) => p.y));
      const width = Math.max(...all.map((p) => p.x + NODE_W)) - x;
      const height = Math.max(...all.map((p) => p.y + NODE_H)) - y;
      const box = canvasEl.current?.getBoundingClientRect();
      if (!box || !box.width) return;
      const pad = 24;
      const zoom = Math.max(0.2, Math.min(1, (box.width - 2 * pad) / width, (box.height - 2 * pad) / height));
      // Centred across, from the top down (the trigger is where a reader starts).
      const left = (box.width - width * zoom) / 2 - x * zoom;
      const top = height * zoom < box.height - 2 * pad ? (box.height - height * zoom) / 2 - y * zoom : pad - y * zoom;
      fittedTo.current = { x: left, y: top, zoom };
      flow.setViewport({ x: left, y: top, zoom }, { duration });
    },
    [laid, flow],
  );
  // Fit every new layout until the marketer pans or zooms themselves.
  useEffect(() => {
    if (laid && !fitted.current && rfNodes.length) requestAnimationFrame(() => fit());
  }, [laid, rfNodes, fit]);
  // ... and when the canvas changes size (the side panel opens or closes).
  useEffect(() => {
    const el = canvasEl.current;
    if (!el || typeof ResizeObserver === "undefined") return undefined;
    const observer = new ResizeObserver(() => {
      if (!fitted.current) fit();
    });
    observer.observe(el);
    return () => observer.disconnect();
  }, [fit]);

  // Forget a selection whose step is gone (after an undo, a delete).
  useEffect(() => {
    if (selectedNode && selectedNode !== TRIGGER && !definition.steps.some((s) => s.key === selectedNode)) {
      setSelection(null);
      setPanelOpen(false);
    }
    if (selectedEdge && !edgesOf(definition, kinds).some((e) => e.id === selectedEdge)) setSelection(null);
  }, [definition, selectedNode, selectedEdge, kinds]);

  // --- edits --------------------------------------------------------------------------
  const openStep = useCallback((key) => {
    setSelection({ type: "node", id: key });
    setPanelOpen(true);
    setDrawer(null);
  }, []);

  const added = useCallback(
    ({ definition: next, key }) => {
      if (!key) return;
      change(next);
      openStep(key);
      setStatus(`Added step ${key}.`);
    },
    [change, openStep],
  );

  const addFromPalette = useCallback(
    (kind) => added(insertAfter(definition, selectedNode, kind)),
    [definition, selectedNode, added],
  );

  const removeSelected = useCallback(() => {
    if (selectedNode && selectedNode !== TRIGGER) {
      change(deleteStep(definition, selectedNode));
      setStatus(`Deleted step ${selectedNode}.`);
      setSelection(null);
      setPanelOpen(false);
    } else if (selectedEdge) {
      const next = disconnect(definition, selectedEdge);
      if (next !== definition) {
        change(next);
        setStatus("Removed the link.");
      }
      setSelection(null);
    }
  }, [definition, selectedNode, selectedEdge, change]);

  const onDrop = useCallback(
    (event) => {
      const kind = event.dataTransfer.getData(DRAG_TYPE) || event.dataTransfer.getData("text/plain");
      if (!kinds[kind]) return;
      event.preventDefault();
      const target = event.target;
      const onLabel = target.closest?.("[data-edge-id]");
      const onEdge = target.closest?.(".react-flow__edge");
      const onNode = target.closest?.(".react-flow__node");
      if (onLabel || onEdge) {
        added(insertOnEdge(definition, onLabel ? onLabel.dataset.edgeId : onEdge.dataset.id, kind));
        return;
      }
      if (onNode) {
        added(insertAfter(definition, onNode.dataset.id, kind));
        return;
      }
      const point = flow.screenToFlowPosition({ x: event.clientX, y: event.clientY });
      const tolerance = 18 / (flow.getZoom() || 1);
      let best = null;
      for (const e of rfEdges) {
        const pts = e.data.points || [];
        for (let i = 1; i < pts.length; i += 1) {
          const d = distanceToSegment(point, pts[i - 1], pts[i]);
          if (d <= tolerance && (!best || d < best.d)) best = { d, id: e.id };
        }
      }
      if (best) added(insertOnEdge(definition, best.id, kind));
      else added(addUnconnected(definition, kind));
    },
    [kinds, definition, flow, rfEdges, added],
  );

  const onConnect = useCallback(
    ({ source, sourceHandle, target }) => {
      if (!source || !target || target === TRIGGER) return;
      change(connect(definition, source, sourceHandle || "next", target));
    },
    [definition, change],
  );

  const reconnected = useRef(false);
  const onReconnect = useCallback(
    (old, { source, sourceHandle, target }) => {
      reconnected.current = true;
      const [from, exit] = splitEdgeId(old.id);
      let next = definition;
      if (source !== from || (sourceHandle || "next") !== exit) next = disconnect(next, old.id);
      next = connect(next, source, sourceHandle || "next", target);
      change(next);
    },
    [definition, change],
  );
  const onReconnectStart = useCallback(() => {
    reconnected.current = false;
  }, []);
  const onReconnectEnd = useCallback(
    (_event, edge) => {
      // Dropped on nothing: the exit is no longer linked.
      if (!reconnected.current) change(disconnect(definition, edge.id));
      reconnected.current = false;
    },
    [definition, change],
  );

  const onNodesChange = useCallback((changes) => {
    setRfNodes((nodes) => applyNodeChanges(changes.filter((c) => c.type !== "remove" && c.type !== "position"), nodes));
    for (const c of changes) {
      if (c.type === "select" && c.selected) setSelection({ type: "node", id: c.id });
    }
  }, []);

  // --- saving, publishing -----------------------------------------------------------
  const save = useCallback(async () => {
    setStatus("Saving the draft…");
    const result = await call(endpoint(urls, "draft"), { method: "POST", body: { definition } });
    if (result.ok) {
      const draft = result.data.draft || definition;
      setSaved(JSON.stringify(draft));
      dispatch({ type: "replace", definition: draft });
      setProblems(result.data.problems || []);
      setJourney((j) => ({ ...j, ...(result.data.journey || {}), has_unpublished_changes: result.data.has_unpublished_changes }));
      setStatus("Draft saved - not live until published.");
      return true;
    }
    if (result.data?.problems) setProblems(result.data.problems);
    setStatus(`Not saved: ${errorText(result)}`);
    return false;
  }, [definition, urls]);

  const publish = useCallback(async () => {
    setPublishing(false);
    if (dirty && !(await save())) return;
    setStatus("Publishing…");
    const result = await call(endpoint(urls, "publish"), { method: "POST", body: {} });
    if (result.ok) {
      setJourney((j) => ({ ...j, published_version: result.data.version, has_unpublished_changes: false, ...(result.data.journey || {}) }));
      setStatus(`Published version ${result.data.version}.`);
      loadCounts();
    } else {
      if (result.data?.problems) setProblems(result.data.problems);
      setStatus(`Not published: ${errorText(result)}`);
    }
  }, [dirty, save, urls, loadCounts]);

  // Drops the pending draft on the server; the canvas then shows what runs.
  const discard = useCallback(async () => {
    if (!window.confirm("Discard the draft? Its changes are lost; the published journey stays as it is.")) return;
    setStatus("Discarding the draft…");
    const result = await call(endpoint(urls, "discard"), { method: "POST", body: {} });
    if (result.ok) {
      const draft = result.data.draft;
      setSaved(JSON.stringify(draft));
      dispatch({ type: "replace", definition: draft });
      setJourney((j) => ({ ...j, ...(result.data.journey || {}) }));
      setStatus("Draft discarded.");
      loadCounts();
    } else {
      setStatus(`Not discarded: ${errorText(result)}`);
    }
  }, [urls, loadCounts]);

  const undo = useCallback(() => dispatch({ type: "undo" }), []);
  const redo = useCallback(() => dispatch({ type: "redo" }), []);

  // --- keyboard -------------------------------------------------------------------
  useEffect(() => {
    function onKey(event) {
      const mod = event.ctrlKey || event.metaKey;
      if (event.key === "Escape") {
        if (publishing) setPublishing(false);
        else if (drawer) setDrawer(null);
        else if (panelOpen) setPanelOpen(false);
        else setSelection(null);
        return;
      }
      if (isTyping(event.target)) return;
      if (mod && (event.key === "z" || event.key === "Z")) {
        event.preventDefault();
        if (event.shiftKey) redo();
        else undo();
      } else if (mod && (event.key === "y" || event.key === "Y")) {
        event.preventDefault();
        redo();
      } else if ((event.key === "Delete" || event.key === "Backspace") && !mod) {
        if (selection) {
          event.preventDefault();
          removeSelected();
        }
      }
    }
    window.addEventListener("keydown", onKey);
    return () => window.removeEventListener("keydown", onKey);
  }, [undo, redo, removeSelected, selection, drawer, panelOpen, publishing]);

  const focusNode = useCallback((key) => {
    const el = wrapper.current?.querySelector(`.react-flow__node[data-id="${CSS.escape(key)}"]`);
    if (el) {
      el.focus();
      setSelection({ type: "node", id: key });
    }
  }, []);

  const onCanvasKey = useCallback(
    (event) => {
      const nodeEl = event.target.closest?.(".react-flow__node");
      if (!nodeEl || isTyping(event.target)) return;
      const key = nodeEl.dataset.id;
      const near = neighbours(definition, key);
      let to = null;
      if (event.key === "Enter" || event.key === " ") {
        event.preventDefault();
        openStep(key);
        return;
      }
      if ((event.key === "Delete" || event.key === "Backspace") && key !== TRIGGER) {
        // The focused step, whether or not it was selected first.
        event.preventDefault();
        event.stopPropagation();
        change(deleteStep(definition, key));
        setStatus(`Deleted step ${key}.`);
        setSelection(null);
        setPanelOpen(false);
        return;
      }
      if (event.key === "ArrowDown") to = near.out[0];
      else if (event.key === "ArrowUp") to = near.in[0];
      else if (event.key === "ArrowRight") to = near.out[1];
      else if (event.key === "ArrowLeft") {
        // From the "no" side back to the "yes" side of the same step, else up.
        const parent = near.in[0] && neighbours(definition, near.in[0]);
        to = parent && parent.out[0] !== key ? parent.out[0] : near.in[0];
      }
      if (to) {
        event.preventDefault();
        focusNode(to);
      }
    },
    [definition, openStep, focusNode, change],
  );

  // --- side column ----------------------------------------------------------------
  const selectedStep = selectedNode && selectedNode !== TRIGGER ? definition.steps.find((s) => s.key === selectedNode) : null;
  let side = null;
  if (drawer === "diff") side = <DiffDrawer url={endpoint(urls, "diff")} dirty={dirty} onClose={() => setDrawer(null)} />;
  else if (drawer === "simulate")
    side = <SimulateDrawer url={endpoint(urls, "simulate")} dirty={dirty} onClose={() => setDrawer(null)} />;
  else if (drawer === "versions") side = <VersionsDrawer url={endpoint(urls, "versions")} onClose={() => setDrawer(null)} />;
  else if (panelOpen && selectedNode === TRIGGER) {
    side = (
      <div className="jc-side-body">
        <SettingsPanel
          definition={definition}
          catalog={catalog}
          problems={problemsByStep[TRIGGER] || []}
          onChange={(next) => change({ ...next, steps: definition.steps }, "settings")}
          onClose={() => setPanelOpen(false)}
        />
      </div>
    );
  } else if (panelOpen && selectedStep) {
    const key = selectedStep.key;
    side = (
      <div className="jc-side-body">
        <div className="jc-side-actions">
          <span className="jc-sub">Step {key}</span>
          <button type="button" data-testid="delete-step" onClick={removeSelected}>
            Delete step
          </button>
        </div>
        <StepPanel
          key={key}
          step={selectedStep}
          kindSpec={kinds[selectedStep.kind]}
          catalog={catalog}
          problems={problemsByStep[key] || []}
          urls={urls}
          onChange={(step) => {
            change(updateStep(definition, key, step), `step:${key}`);
            if (step.key !== key) setSelection({ type: "node", id: step.key });
          }}
          onClose={() => setPanelOpen(false)}
        />
      </div>
    );
  }

  const problemCount = problems.length;
  const publishBlocked = problemCount
    ? `Fix the ${problemCount} problem${problemCount === 1 ? "" : "s"} first: a draft with problems cannot be published.`
    : "";
  const pendingDraft = Boolean(journey?.draft_pending);
  return (
    <div className="jc-app" ref={wrapper}>
      <div className="jc-toolbar" role="toolbar" aria-label="Journey canvas">
        <button type="button" data-testid="undo" onClick={undo} disabled={!history.past.length} title="Undo (Ctrl+Z)">
          ↶ Undo
        </button>
        <button type="button" data-testid="redo" onClick={redo} disabled={!history.future.length} title="Redo (Ctrl+Shift+Z)">
          ↷ Redo
        </button>
        <button type="button" data-testid="fit" onClick={() => {
            fitted.current = false;
            fit(200);
          }}>
          Fit
        </button>
        {!panelOpen && selection && selection.id !== TRIGGER ? (
          <button type="button" data-testid="delete-step" onClick={removeSelected}>
            {selectedEdge ? "Remove link" : "Delete step"}
          </button>
        ) : null}
        <span className="jc-sep" />
        <label className="jc-counts-of">
          Counts of{" "}
          <select value={countsOf} onChange={(e) => setCountsOf(e.target.value)} name="counts-of" data-testid="counts-of">
            <option value="published">published version</option>
            <option value="draft">draft</option>
          </select>
        </label>
        <span className="jc-sep" />
        <button type="button" data-testid="save-draft" className="jc-primary" onClick={save} disabled={!dirty}>
          Save draft
        </button>
        <button type="button" data-testid="diff" aria-pressed={drawer === "diff"} onClick={() => setDrawer(drawer === "diff" ? null : "diff")}>
          Changes
        </button>
        <button type="button" data-testid="simulate" aria-pressed={drawer === "simulate"} onClick={() => setDrawer(drawer === "simulate" ? null : "simulate")}>
          Simulate
        </button>
        <button type="button" data-testid="versions" aria-pressed={drawer === "versions"} onClick={() => setDrawer(drawer === "versions" ? null : "versions")}>
          Versions
        </button>
        <button type="button" data-testid="discard-draft" onClick={discard} disabled={!pendingDraft} title={pendingDraft ? "Drop the saved draft and go back to what is published" : "There is no saved draft to discard"}>
          Discard draft
        </button>
        <span className="jc-tip" title={publishBlocked || undefined}>
          <button type="button" data-testid="publish" onClick={() => setPublishing(true)} disabled={Boolean(publishBlocked)} title={publishBlocked || "Publish the draft: customers who enter from now on follow it"} aria-describedby={publishBlocked ? "jc-publish-why" : undefined}>
            Publish…
          </button>
          {publishBlocked ? <span id="jc-publish-why" className="jc-sr-only">{publishBlocked}</span> : null}
        </span>
      </div>
      <div className="jc-status" data-testid="status" role="status" aria-live="polite">
        <span>{dirty ? "Unsaved changes" : "All changes saved"}</span>
        <span>
          {journey?.published_version ? `Published: version ${journey.published_version}` : "Not published yet"}
        </span>
        {journey?.has_unpublished_changes ? <span className="jc-warn" data-testid="unpublished">Unpublished changes</span> : null}
        {journey?.stale ? (
          <span className="jc-bad" data-testid="stale-draft">
            The journey was changed elsewhere (e.g. through the API) after this draft was started: publishing it replaces those changes.
          </span>
        ) : null}
        <span className={problemCount ? "jc-bad" : ""}>
          {problemCount ? `${problemCount} problem${problemCount === 1 ? "" : "s"} to fix before publishing` : "No problems"}
        </span>
        {status ? <span className="jc-message">{status}</span> : null}
      </div>
      <div className="jc-body">
        <Palette kinds={kinds} onAdd={addFromPalette} />
        <div
          className="jc-canvas"
          ref={canvasEl}
          onDragOver={(e) => {
            e.preventDefault();
            e.dataTransfer.dropEffect = "copy";
          }}
          onDrop={onDrop}
          onKeyDown={onCanvasKey}
        >
          <ReactFlow
            nodes={rfNodes}
            edges={rfEdges}
            nodeTypes={nodeTypes}
            edgeTypes={edgeTypes}
            onNodesChange={onNodesChange}
            onNodeClick={(_e, node) => openStep(node.id)}
            onEdgeClick={(_e, edge) => setSelection({ type: "edge", id: edge.id })}
            onPaneClick={() => setSelection(null)}
            onMoveEnd={(event, viewport) => {
              // A click on a step also starts a (zero) move: only a real pan or zoom counts.
              const was = fittedTo.current;
              if (event && (!was || Math.abs(was.x - viewport.x) + Math.abs(was.y - viewport.y) > 2 || Math.abs(was.zoom - viewport.zoom) > 0.001)) {
                fitted.current = true;
              }
            }}
            onConnect={onConnect}
            onReconnect={onReconnect}
            onReconnectStart={onReconnectStart}
            onReconnectEnd={onReconnectEnd}
            nodesDraggable={false}
            nodesConnectable
            edgesReconnectable
            elementsSelectable
            deleteKeyCode={null}
            disableKeyboardA11y
            minZoom={0.2}
            maxZoom={2}
            proOptions={{ hideAttribution: true }}
          >
            <Background gap={24} size={1} />
            <Controls showInteractive={false} />
          </ReactFlow>
        </div>
        {side ? (
          <aside className="jc-side" data-testid="side-column" aria-label="Step settings">
            {drawer ? (
              <button type="button" className="jc-close" onClick={() => setDrawer(null)} aria-label="Close">
                ×
              </button>
            ) : null}
            {side}
          </aside>
        ) : null}
      </div>
      {publishing ? (
        <PublishDialog
          dirty={dirty}
          problems={problemCount}
          next={(journey?.published_version || 0) + 1}
          onConfirm={publish}
          onCancel={() => setPublishing(false)}
        />
      ) : null}
    </div>
  );
}

export default function App({ initial }) {
  return (
    <ReactFlowProvider>
      <Canvas initial={initial} />
    </ReactFlowProvider>
  );
}
