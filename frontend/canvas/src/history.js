// Undo/redo over whole definitions. Typing in one field of one step within a moment
// coalesces into one entry, so undo steps back over an edit, not a keystroke.

const COALESCE_MS = 1500;
const LIMIT = 200;

export function initialHistory(definition) {
  return { past: [], present: definition, future: [], group: null, at: 0 };
}

export function historyReducer(state, action) {
  switch (action.type) {
    case "change": {
      if (action.definition === state.present) return state;
      const now = Date.now();
      if (action.group && action.group === state.group && now - state.at < COALESCE_MS) {
        return { ...state, present: action.definition, future: [], at: now };
      }
      return {
        past: [...state.past, state.present].slice(-LIMIT),
        present: action.definition,
        future: [],
        group: action.group || null,
        at: now,
      };
    }
    case "replace":
      return { ...state, present: action.definition, group: null };
    case "undo":
      if (!state.past.length) return state;
      return {
        past: state.past.slice(0, -1),
        present: state.past[state.past.length - 1],
        future: [state.present, ...state.future],
        group: null,
        at: 0,
      };
    case "redo":
      if (!state.future.length) return state;
      return {
        past: [...state.past, state.present],
        present: state.future[0],
        future: state.future.slice(1),
        group: null,
        at: 0,
      };
    default:
      return state;
  }
}
