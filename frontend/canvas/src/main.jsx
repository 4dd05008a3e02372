import { createRoot } from "react-dom/client";
import "@xyflow/react/dist/style.css";
import "./canvas.css";
import App from "./App.jsx";

const mount = document.getElementById("journey-canvas");
const source = document.getElementById("canvas-state");
if (mount && source) {
  const initial = JSON.parse(source.textContent);
  createRoot(mount).render(<App initial={initial} />);
}
