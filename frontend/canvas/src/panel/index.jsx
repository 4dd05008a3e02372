// Placeholder until the side panel components land; they render nothing.
export function StepPanel() {
  return null;
}
export function SettingsPanel() {
  return null;
}
export function ConditionsEditor() {
  return null;
}
