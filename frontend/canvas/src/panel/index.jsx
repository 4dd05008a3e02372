// The canvas's side panel: a step's settings, the journey's settings and the
// conditions editor, each rendered from the catalog the server sends with the state.
export { ConditionsEditor } from "./ConditionsEditor.jsx";
export { SettingsPanel } from "./SettingsPanel.jsx";
export { StepPanel } from "./StepPanel.jsx";
